# kairoi: transactional Kairoi scheduling inside PostgreSQL (PGXS build)

MODULE_big = kairoi
OBJS = \
	src/admin.o \
	src/at_commit.o \
	src/connection.o \
	src/guc.o \
	src/init.o \
	src/kcp.o \
	src/launcher.o \
	src/logical_replication.o \
	src/outbox.o \
	src/outbox_1_1.o \
	src/outbox_direct.o \
	src/pipeline.o \
	src/rejections.o \
	src/shmem.o \
	src/sql_api.o \
	src/trigger.o \
	src/utility.o \
	src/worker.o \
	src/worker_session.o \
	src/worker_xact.o

EXTENSION = kairoi
DATA = kairoi--1.0.sql kairoi--1.0--1.1.sql kairoi--1.1--1.2.sql
PGFILEDESC = "kairoi - transactional Kairoi job scheduling"

# Tests that need a delivery worker and the Kairoi test server
REGRESS = kairoi_setup kairoi_inputs kairoi_outbox kairoi_delivery \
	kairoi_trigger kairoi_privileges kairoi_admin kairoi_workers \
	kairoi_job_trigger kairoi_job_set_many kairoi_search_path \
	kairoi_logical_replication
ISOLATION = kairoi_concurrent kairoi_race
# What `make installcheck` runs when the server has no worker for the
# regression database
REGRESS_NO_WORKER = kairoi_queue
# PGXS's installcheck cannot choose its tests by what the server offers,
# nor start the test server: test/installcheck.sh does both
NO_INSTALLCHECK = 1

# The release, from META.json (scripts/check-release keeps every file in step)
KAIROI_VERSION := $(shell sed -n '0,/"version"/s/.*"version": *"\([^"]*\)".*/\1/p' META.json)
PG_CPPFLAGS = -Isrc -DKAIROI_LIBRARY_VERSION='"$(KAIROI_VERSION)"'
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers \
	-Wshadow -Wformat=2 -Wstrict-prototypes -Wmissing-declarations

# Bitcode for JIT would be built by clang, which ignores PG_CFLAGS.
# "override": PGXS's Makefile.global, included below, sets with_llvm = yes
# and a plain assignment here would lose to it.
override with_llvm = no

# PostgreSQL major version to build for (test/pg-versions sets it inside
# the root of another version); PG_CONFIG follows it unless given
PG_MAJOR ?= 15
PG_CONFIG ?= /usr/lib/postgresql/$(PG_MAJOR)/bin/pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS tracks no header dependencies: a struct changed in a header must
# rebuild every object, or they disagree on its layout in shared memory.
$(OBJS): $(wildcard src/*.h)

installcheck:
	PG_CONFIG='$(PG_CONFIG)' REGRESS='$(REGRESS)' ISOLATION='$(ISOLATION)' \
		REGRESS_NO_WORKER='$(REGRESS_NO_WORKER)' test/installcheck.sh
.PHONY: installcheck

# Used by test/regress.sh to read the test lists above
print-%:
	@echo $($*)

# Static analysis of the C sources; prints a result line for test/run-all
lint:
	@cppcheck --quiet --error-exitcode=1 --enable=warning,style,performance,portability \
		--inline-suppr --std=c99 --suppress=missingIncludeSystem src/kcp.c && \
	cppcheck --quiet --error-exitcode=1 --enable=warning,style,performance,portability \
		--inline-suppr -I src -I $(shell $(PG_CONFIG) --includedir-server) \
		--suppress='*:/usr/include/*' --suppress=toomanyconfigs --max-configs=1 src/*.c && \
	echo "1 passed, 0 failed" || { echo "0 passed, 1 failed"; exit 1; }
.PHONY: lint

# The release bundle kairoi-X.Y.Z.zip and its checksum (scripts/dist), in
# DIST_DIR (default: here)
dist:
	scripts/dist $(DIST_DIR)
.PHONY: dist
