# SPDX-License-Identifier: BSD-3-Clause
# docs: manual pages, written in POD (docs/*.pod) and turned into roff by
# pod2man at build time, as nbdkit does; `make install` installs them.
MAN_PODS = docs/r3run.pod docs/r3serve.pod docs/r3mount.pod docs/r3sync.pod \
	docs/libr3.pod docs/r3-uri.pod
man_MANS = docs/r3run.1 docs/r3serve.1 docs/r3mount.1 docs/r3sync.1 \
	docs/libr3.3 docs/r3-uri.7
EXTRA_DIST += $(MAN_PODS) docs/architecture.md
CLEANFILES += $(man_MANS)

# The section is the page's suffix; the title is the file name.
POD2MAN_RUN = $(AM_V_GEN)$(MKDIR_P) docs && \
	$(POD2MAN) --utf8 --center="r3" --release="r3 $(PACKAGE_VERSION)" \
	--name="$$(echo $(notdir $(basename $@)) | tr a-z A-Z)" \
	--section="$(subst .,,$(suffix $@))" $< > $@-t && mv $@-t $@
docs/%.1: docs/%.pod
	$(POD2MAN_RUN)
docs/%.3: docs/%.pod
	$(POD2MAN_RUN)
docs/%.7: docs/%.pod
	$(POD2MAN_RUN)

# tests/integration/man_pages.sh checks them.
check_DATA = $(man_MANS)

# r3bench(1) (docs/r3bench.pod; the pod is in bench/local.mk's EXTRA_DIST)
man_MANS += docs/r3bench.1
