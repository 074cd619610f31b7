# ngx_chat_module build, tests, sanitizer run, fuzzing, benchmarks.
#
#   make                 build build/ngx_chat_module.so for Debian's nginx
#   make NGINX_SRC=DIR   build against your own nginx source tree
#   make test            run the suite (t/) with the clean-room runner (t/runner)
#   make test-real       the same with the real Test::Nginx (TEST_NGINX_LIB,
#                        default ../shared/test-nginx/lib; empty: the
#                        installed one, e.g. from CPAN)
#   make test-asan       the same suite with an ASan+UBSan build
#   make check           unit tests, the suite, then the suite under ASan
#   make fuzz            run the libFuzzer targets
#   make deps            install every Debian package needed (idempotent)
#   make deb             the Debian package libnginx-mod-http-chat, in
#                        build/deb/ (dpkg-buildpackage on a copy of the tree)
#   make deb-check       builds it, installs it with dpkg -i, runs nginx -t
#                        and one chat message through it, purges it (root;
#                        changes the system: for CI and throw-away machines)

NGINX_SRC    ?= /usr/share/nginx/src
NGINX_BIN    ?= /usr/sbin/nginx
BUILD        ?= $(CURDIR)/build
NGINX_BUILD   = $(BUILD)/nginx
MODULE        = $(BUILD)/ngx_chat_module.so
ASAN_BUILD    = $(BUILD)/asan
ASAN_MODULE   = $(ASAN_BUILD)/ngx_chat_module.so

# The block files in t/ run under either Test::Nginx::Socket: the clean-room
# subset in t/runner (make test) or the real one (make test-real).  t/lib
# holds only Test::Chat::*, so it never shadows the one chosen here;
# TEST_CHAT_RUNNER lets t/004-runner-loaded.t check which one was loaded.
TEST_NGINX_LIB ?= $(abspath $(CURDIR)/../shared/test-nginx/lib)

SOURCES = config ngx_chat_module.c $(wildcard src/*.c src/*.h)

# Debian builds nginx with these; our own sources add -Werror
DEB_CC_OPT = -g -O2 -fstack-protector-strong -Wformat \
             -Werror=format-security -fPIC -Wdate-time -D_FORTIFY_SOURCE=2
DEB_LD_OPT = -Wl,-z,relro -Wl,-z,now -fPIC
ASAN_FLAGS = -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
             -fno-sanitize-recover=undefined -fPIC
ASAN_LD    = -fsanitize=address,undefined -fPIC

.PHONY: deb deb-check all deps test test-real test-asan asan fuzz unit bench clean run check

all: $(MODULE)

# configure_tree DIR CC_OPT LD_OPT
define configure_tree
	rm -rf $(1) && mkdir -p $(1)
	cp -r $(NGINX_SRC)/. $(1)/
	cd $(1) && if [ -f conf_flags ]; then \
	    . ./conf_flags; \
	    ./configure "$${NGX_CONF_FLAGS[@]}" --with-cc-opt="$(2)" \
	        --with-ld-opt="$(3)" --add-dynamic-module=$(CURDIR) >configure.log; \
	else \
	    ./configure --with-compat $(NGINX_CONFIGURE_ARGS) \
	        --with-cc-opt="$(2)" --with-ld-opt="$(3)" \
	        --add-dynamic-module=$(CURDIR) >configure.log; \
	fi || { cat $(1)/configure.log $(1)/objs/autoconf.err; exit 1; }
endef

SHELL = /bin/bash

$(NGINX_BUILD)/objs/Makefile: config
	$(call configure_tree,$(NGINX_BUILD),$(DEB_CC_OPT) -Werror,$(DEB_LD_OPT))

$(MODULE): $(NGINX_BUILD)/objs/Makefile $(SOURCES)
	$(MAKE) -C $(NGINX_BUILD) -f objs/Makefile modules
	cp $(NGINX_BUILD)/objs/ngx_chat_module.so $@.tmp && mv -f $@.tmp $@

$(ASAN_BUILD)/objs/Makefile: config
	$(call configure_tree,$(ASAN_BUILD),$(ASAN_FLAGS) -Werror,$(ASAN_LD))

$(ASAN_MODULE): $(ASAN_BUILD)/objs/Makefile $(SOURCES)
	$(MAKE) -C $(ASAN_BUILD) -f objs/Makefile modules
	cp $(ASAN_BUILD)/objs/ngx_chat_module.so $@.tmp && mv -f $@.tmp $@

asan: $(ASAN_MODULE)

deps:
	./scripts/deps.sh

unit:
	$(MAKE) -C t/unit test

test: $(MODULE)
	TEST_NGINX_BINARY=$(NGINX_BIN) \
	TEST_NGINX_LOAD_MODULES=$(MODULE) TEST_CHAT_RUNNER=clean-room \
	    prove -I t/runner -I t/lib -r t/

test-real: $(MODULE)
	@if [ -n "$(TEST_NGINX_LIB)" ] \
	    && [ ! -f "$(TEST_NGINX_LIB)/Test/Nginx/Socket.pm" ]; then \
	    echo "no $(TEST_NGINX_LIB)/Test/Nginx/Socket.pm: set TEST_NGINX_LIB," \
	         "or TEST_NGINX_LIB= for the installed Test::Nginx" >&2; \
	    exit 1; fi
	TEST_NGINX_BINARY=$(NGINX_BIN) \
	TEST_NGINX_LOAD_MODULES=$(MODULE) \
	TEST_CHAT_RUNNER=$(if $(TEST_NGINX_LIB),$(TEST_NGINX_LIB),real) \
	    prove $(if $(TEST_NGINX_LIB),-I $(TEST_NGINX_LIB)) -I t/lib -r t/

test-asan: $(ASAN_MODULE)
	rm -rf $(BUILD)/asan-logs && mkdir -p $(BUILD)/asan-logs
	TEST_NGINX_BINARY=$(CURDIR)/scripts/nginx-asan \
	NGINX_BIN=$(NGINX_BIN) ASAN_LOG_DIR=$(BUILD)/asan-logs \
	TEST_NGINX_LOAD_MODULES=$(ASAN_MODULE) TEST_NGINX_ASAN=1 \
	TEST_CHAT_RUNNER=clean-room \
	    prove -I t/runner -I t/lib -r t/
	./scripts/asan-check.sh $(BUILD)/asan-logs

check: unit test test-asan

fuzz:
	$(MAKE) -C fuzz run

run: $(MODULE)
	./scripts/run-demo.sh

bench:
	$(MAKE) -C bench

# dpkg-buildpackage writes the .deb beside the source tree: the tree is
# copied to build/deb/src (what git tracks, plus debian/), so the files
# land in build/deb/ and the checkout stays clean
deb:
	rm -rf $(BUILD)/deb && mkdir -p $(BUILD)/deb/src
	if git rev-parse --git-dir >/dev/null 2>&1; then \
	    git ls-files -z | xargs -0 cp --parents -t $(BUILD)/deb/src; \
	else \
	    tar -c --exclude=./build --exclude='./t/servroot*' . \
	        | tar -x -C $(BUILD)/deb/src; \
	fi
	cd $(BUILD)/deb/src && dpkg-buildpackage -b -us -uc
	@ls -1 $(BUILD)/deb/*.deb

deb-check: deb
	./scripts/deb-check.sh $(BUILD)/deb/libnginx-mod-http-chat_*.deb

clean:
	rm -rf $(BUILD)
