# Configuration: directives, defaults, and what nginx -t says about bad ones
use Test::Nginx::Socket;

repeat_each(1);
plan tests => repeat_each() * (2 * blocks());

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a complete configuration loads
--- http_config
    chat_zone chat 1m;
--- config
    location = /chat {
        chat chat;
        chat_user $arg_user;
        chat_rate 10r/s burst=20;
        chat_history 100;
        chat_max_message_size 4k;
        chat_origins https://app.example.com http://localhost:8080;
        chat_max_rooms 8;
        chat_send_buffer 64k;
        chat_ping_interval 20s;
        chat_ping_timeout 5s;
    }
    location = /chat/status { chat_status chat; }
--- request
GET /chat/status
--- error_code: 200
--- no_error_log
[error]



=== TEST 2: unknown zone, with file and line
--- config
    location = /chat { chat nope; chat_user $arg_user; }
--- must_die
--- error_log eval
qr/unknown chat zone "nope" in \S+nginx\.conf:\d+/



=== TEST 3: duplicate zone
--- http_config
    chat_zone chat 1m;
    chat_zone chat 1m;
--- config
--- must_die
--- error_log eval
qr/duplicate chat zone "chat" in \S+nginx\.conf:\d+/



=== TEST 4: bad zone size
--- http_config
    chat_zone chat lots;
--- config
--- must_die
--- error_log eval
qr/invalid chat zone size "lots" in \S+nginx\.conf:\d+/



=== TEST 5: zone too small
--- http_config
    chat_zone chat 8k;
--- config
--- must_die
--- error_log eval
qr/chat zone "chat" is too small, at least \d+k in \S+nginx\.conf:\d+/



=== TEST 6: bad rate
--- http_config
    chat_zone chat 1m;
--- config
    location = /chat { chat chat; chat_user $arg_user; chat_rate fast; }
--- must_die
--- error_log eval
qr/invalid rate "fast", expected "Nr\/s \[burst=M\]" or "off" in \S+nginx\.conf:\d+/



=== TEST 7: bad burst
--- http_config
    chat_zone chat 1m;
--- config
    location = /chat { chat chat; chat_user $arg_user; chat_rate 5r/s burst=x; }
--- must_die
--- error_log eval
qr/invalid burst value "burst=x" in \S+nginx\.conf:\d+/



=== TEST 7b: burst too large (the zone keeps it in 31 bits)
--- http_config
    chat_zone chat 1m;
--- config
    location = /chat { chat chat; chat_user $arg_user; chat_rate 5r/s burst=1000001; }
--- must_die
--- error_log eval
qr/invalid burst value "burst=1000001" in \S+nginx\.conf:\d+/



=== TEST 8: chat without chat_user
--- http_config
    chat_zone chat 1m;
--- config
    location = /chat { chat chat; }
--- must_die
--- error_log eval
qr/"chat_user" is required in a "chat" location in \S+nginx\.conf:\d+/



=== TEST 9: chat_user inherited from the server level
--- http_config
    chat_zone chat 1m;
--- config
    chat_user $arg_user;
    location = /chat { chat chat; }
--- request
GET /chat?user=ann
--- error_code: 426
--- no_error_log
[error]



=== TEST 10: chat_zone outside http
--- main_config
    chat_zone chat 1m;
--- config
--- must_die
--- error_log eval
qr/"chat_zone" directive is not allowed here in \S+nginx\.conf:\d+/



=== TEST 11: status of an unknown zone
--- http_config
    chat_zone chat 1m;
--- config
    location = /s { chat_status other; }
--- must_die
--- error_log eval
qr/unknown chat zone "other" in \S+nginx\.conf:\d+/



=== TEST 12: chat_history out of range
--- http_config
    chat_zone chat 1m;
--- config
    location = /chat { chat chat; chat_user $arg_user; chat_history 1000001; }
--- must_die
--- error_log eval
qr/value must be between 0 and 100000 in \S+nginx\.conf:\d+/



=== TEST 13: rate "off" and rate per minute are accepted
--- http_config
    chat_zone chat 1m;
--- config
    location = /a { chat chat; chat_user $arg_user; chat_rate off; }
    location = /b { chat chat; chat_user $arg_user; chat_rate 30r/m; }
    location = /c { chat chat; chat_user $arg_user; chat_rate 2 r/s burst=3; }
--- request
GET /b?user=x
--- error_code: 426
--- no_error_log
[error]



=== TEST 14: duplicate chat in one location
--- http_config
    chat_zone chat 1m;
--- config
    location = /chat { chat chat; chat chat; chat_user $arg_user; }
--- must_die
--- error_log eval
qr/"chat" directive is duplicate in \S+nginx\.conf:\d+/



=== TEST 15: a zone too small for chat_max_message_size
--- http_config
    chat_zone chat 256k;
--- config
    location = /chat { chat chat; chat_user $arg_user; chat_max_message_size 64k; }
--- must_die
--- error_log eval
qr/chat zone "chat" is too small for chat_max_message_size 65536, at least \d+k in \S+nginx\.conf:\d+/



=== TEST 16: a bad redis URL, with file and line
--- http_config
    chat_zone chat 1m;
    chat_redis http://127.0.0.1:6379;
--- config
--- must_die
--- error_log eval
qr/invalid redis URL.* in \S+nginx\.conf:\d+/
