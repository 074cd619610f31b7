# chat_deflate, chat_deflate_min_size, chat_deflate_level (SPEC §9): they
# load, and nginx -t names the file and line of a bad value
use Test::Nginx::Socket;

repeat_each(1);
plan tests => repeat_each() * (2 * blocks());

no_shuffle();
run_tests();

__DATA__

=== TEST 1: the directives load, at every level
--- http_config
    chat_zone chat 1m;
    chat_deflate off;
    chat_deflate_min_size 1k;
--- config
    chat_deflate_level 6;
    location = /chat {
        chat chat;
        chat_user $arg_user;
        chat_deflate on;
        chat_deflate_min_size 0;
        chat_deflate_level 9;
    }
    location = /chat/status { chat_status chat; }
--- request
GET /chat/status
--- error_code: 200
--- no_error_log
[error]



=== TEST 2: chat_deflate takes on or off
--- http_config
    chat_zone chat 1m;
--- config
    location = /chat { chat chat; chat_user $arg_user; chat_deflate maybe; }
--- must_die
--- error_log eval
qr/invalid value "maybe" in "chat_deflate" directive, it must be "on" or "off" in \S+nginx\.conf:\d+/



=== TEST 3: chat_deflate_level is 1 to 9
--- http_config
    chat_zone chat 1m;
--- config
    location = /chat { chat chat; chat_user $arg_user; chat_deflate_level 10; }
--- must_die
--- error_log eval
qr/value must be between 1 and 9 in \S+nginx\.conf:\d+/



=== TEST 4: chat_deflate_min_size is a size
--- http_config
    chat_zone chat 1m;
--- config
    location = /chat { chat chat; chat_user $arg_user; chat_deflate_min_size lots; }
--- must_die
--- error_log eval
qr/"chat_deflate_min_size" directive invalid value in \S+nginx\.conf:\d+/
