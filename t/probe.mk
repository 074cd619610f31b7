# Build and test rules shared by the client probes (t/redis-client,
# t/pg-client): a test-only HTTP module that drives one client of src/
# (ngx_chat_redis.c, ngx_chat_pg.c) from requests, and its probe.t.  The
# probe is built from its own copy of the nginx tree under build/PROBE-probe/,
# never together with ngx_chat_module.
#
# The including Makefile sets, then includes this file:
#
#   PROBE      short name: the module is ngx_http_$(PROBE)_probe_module
#   CLIENT     the client under test, src/$(CLIENT).c and .h
#   PROBE_ENV  the variable through which probe.t gets the module's path
#
#   make -C t/PROBE-client             build the probe module
#   make -C t/PROBE-client test        build it and run probe.t
#   make -C t/PROBE-client test-asan   the same with ASan+UBSan

TOP         := $(abspath $(CURDIR)/../..)
NGINX_SRC   ?= /usr/share/nginx/src
NGINX_BIN   ?= /usr/sbin/nginx
BUILD       ?= $(TOP)/build/$(PROBE)-probe
TREE         = $(BUILD)/nginx
ASAN_TREE    = $(BUILD)/asan
SO           = ngx_http_$(PROBE)_probe_module.so
MODULE       = $(BUILD)/$(SO)
ASAN_MODULE  = $(BUILD)/asan/$(SO)

SOURCES = config ngx_http_$(PROBE)_probe_module.c \
          $(wildcard $(TOP)/src/ngx_chat_backoff.[ch] $(TOP)/src/$(CLIENT)_conf.c) \
          $(TOP)/src/$(CLIENT).c $(TOP)/src/$(CLIENT).h

# as the top-level Makefile: Debian's flags, -Werror for our sources
DEB_CC_OPT = -g -O2 -fstack-protector-strong -Wformat \
             -Werror=format-security -fPIC -Wdate-time -D_FORTIFY_SOURCE=2
DEB_LD_OPT = -Wl,-z,relro -Wl,-z,now -fPIC
ASAN_FLAGS = -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
             -fno-sanitize-recover=undefined -fPIC
ASAN_LD_OPT = -fsanitize=address,undefined

# probe.t finds Test::Chat::Probe (and Test::Chat::Pg) in t/lib itself
PROVE = prove -v probe.t

SHELL = /bin/bash

.PHONY: all test asan test-asan clean

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
	    ./configure --with-compat --with-cc-opt="$(2)" --with-ld-opt="$(3)" \
	        --add-dynamic-module=$(CURDIR) >configure.log; \
	fi || { cat $(1)/configure.log $(1)/objs/autoconf.err; exit 1; }
endef

$(TREE)/objs/Makefile: config
	$(call configure_tree,$(TREE),$(DEB_CC_OPT) -Werror,$(DEB_LD_OPT))

$(MODULE): $(TREE)/objs/Makefile $(SOURCES)
	$(MAKE) -C $(TREE) -f objs/Makefile modules
	cp $(TREE)/objs/$(SO) $@.tmp && mv -f $@.tmp $@

$(ASAN_TREE)/objs/Makefile: config
	$(call configure_tree,$(ASAN_TREE),$(ASAN_FLAGS) -Werror,$(ASAN_LD_OPT))

$(ASAN_MODULE): $(ASAN_TREE)/objs/Makefile $(SOURCES)
	$(MAKE) -C $(ASAN_TREE) -f objs/Makefile modules
	cp $(ASAN_TREE)/objs/$(SO) $@.tmp && mv -f $@.tmp $@

asan: $(ASAN_MODULE)

test: $(MODULE)
	TEST_NGINX_BINARY=$(NGINX_BIN) $(PROBE_ENV)=$(MODULE) $(PROVE)

test-asan: $(ASAN_MODULE)
	rm -f $(BUILD)/asan-log*
	TEST_NGINX_BINARY=$(NGINX_BIN) $(PROBE_ENV)=$(ASAN_MODULE) \
	LD_PRELOAD=$$(gcc -print-file-name=libasan.so) \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:log_path=$(BUILD)/asan-log \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$(BUILD)/asan-log \
	    $(PROVE)
	@if ls $(BUILD)/asan-log* >/dev/null 2>&1; then \
	    echo "sanitizer reports:"; cat $(BUILD)/asan-log*; exit 1; fi

clean:
	rm -rf $(BUILD)
