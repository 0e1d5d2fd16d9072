/* kairoi--1.0--1.1.sql: upgrade from 1.0 to 1.1 */

\echo Use "ALTER EXTENSION kairoi UPDATE TO '1.1'" to load this file. \quit

/*
 * There is no kairoi--1.1.sql: CREATE EXTENSION kairoi installs 1.0 and
 * runs this script, as contrib modules do, so that a fresh 1.1 and an
 * upgraded 1.0 are the same by construction.  test/integration/upgrade.sh
 * checks it, with entries queued.
 */

/* ---- Every database served: launcher, a worker per database ---- */

/* ---- Cheaper enqueueing ---- */
