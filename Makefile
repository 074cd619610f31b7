# ngx_chat_module build, tests, sanitizer run, fuzzing, benchmarks.
#
#   make                 build build/ngx_chat_module.so for Debian's nginx
#   make NGINX_SRC=DIR   build against your own nginx source tree
#   make test            run the Test::Nginx suite (t/)
#   make test-asan       the same suite with an ASan+UBSan build
#   make check           unit tests, the suite, then the suite under ASan
#   make fuzz            run the libFuzzer targets
#   make deps            install every Debian package needed (idempotent)

NGINX_SRC    ?= /usr/share/nginx/src
NGINX_BIN    ?= /usr/sbin/nginx
BUILD        ?= $(CURDIR)/build
NGINX_BUILD   = $(BUILD)/nginx
MODULE        = $(BUILD)/ngx_chat_module.so
ASAN_BUILD    = $(BUILD)/asan
ASAN_MODULE   = $(ASAN_BUILD)/ngx_chat_module.so

SOURCES = config ngx_chat_module.c $(wildcard src/*.c src/*.h)

# Debian builds nginx with these; our own sources add -Werror
DEB_CC_OPT = -g -O2 -fstack-protector-strong -Wformat \
             -Werror=format-security -fPIC -Wdate-time -D_FORTIFY_SOURCE=2
DEB_LD_OPT = -Wl,-z,relro -Wl,-z,now -fPIC
ASAN_FLAGS = -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
             -fno-sanitize-recover=undefined -fPIC
ASAN_LD    = -fsanitize=address,undefined -fPIC

.PHONY: all deps test test-asan asan fuzz unit bench clean run check

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
	TEST_NGINX_LOAD_MODULES=$(MODULE) \
	    prove -I t/lib -r t/

test-asan: $(ASAN_MODULE)
	rm -rf $(BUILD)/asan-logs && mkdir -p $(BUILD)/asan-logs
	TEST_NGINX_BINARY=$(CURDIR)/scripts/nginx-asan \
	NGINX_BIN=$(NGINX_BIN) ASAN_LOG_DIR=$(BUILD)/asan-logs \
	TEST_NGINX_LOAD_MODULES=$(ASAN_MODULE) TEST_NGINX_ASAN=1 \
	    prove -I t/lib -r t/
	./scripts/asan-check.sh $(BUILD)/asan-logs

check: unit test test-asan

fuzz:
	$(MAKE) -C fuzz run

run: $(MODULE)
	./scripts/run-demo.sh

bench:
	$(MAKE) -C bench

clean:
	rm -rf $(BUILD)
