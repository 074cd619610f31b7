# The WebSocket handshake (SPEC §3): 101, 426, 400, 401, 403, access phase
#
# Every refused request asks for "close" among its Connection tokens: both
# Test::Nginx runners read a response until nginx closes the connection,
# and a refusal is an ordinary keep-alive HTTP/1.1 response (Content-Length;
# t/handshake-keepalive.t checks that the connection stays usable).  The
# 101 blocks read for their timeout and end with abort.
use Test::Nginx::Socket;

repeat_each(1);
# 3 checks a block; TESTs 4 and 5 have one more (the refusal's reason)
plan tests => repeat_each() * (3 * blocks() + 2);

our $HttpConfig = <<'_EOC_';
    chat_zone chat 1m;
_EOC_

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a valid upgrade gets 101 with the RFC 6455 accept key
--- http_config eval: $::HttpConfig
--- config
    location = /chat { chat chat; chat_user $arg_user; }
--- raw_request eval
"GET /chat?user=ann HTTP/1.1\r
Host: localhost\r
Upgrade: websocket\r
Connection: Upgrade\r
Sec-WebSocket-Version: 13\r
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r
\r
"
--- abort
--- error_code: 101
--- timeout: 1
--- raw_response_headers_like: ^HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=\r\n\z
--- no_error_log
[error]



=== TEST 2: a plain GET gets 426 with Sec-WebSocket-Version
--- http_config eval: $::HttpConfig
--- config
    location = /chat { chat chat; chat_user $arg_user; }
--- request
GET /chat?user=ann
--- error_code: 426
--- response_headers
Sec-WebSocket-Version: 13
--- no_error_log
[error]



=== TEST 3: Connection without upgrade gets 426
--- http_config eval: $::HttpConfig
--- config
    location = /chat { chat chat; chat_user $arg_user; }
--- request
GET /chat?user=ann
--- more_headers
Upgrade: websocket
Connection: close
Sec-WebSocket-Version: 13
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==
--- error_code: 426
--- response_body_like: 426 Upgrade Required
--- no_error_log
[error]



=== TEST 4: missing version gets 426 with Sec-WebSocket-Version: 13
--- http_config eval: $::HttpConfig
--- config
    location = /chat { chat chat; chat_user $arg_user; }
--- request
GET /chat?user=ann
--- more_headers
Upgrade: websocket
Connection: Upgrade, close
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==
--- error_code: 426
--- response_headers
Sec-WebSocket-Version: 13
--- error_log
chat: missing or unsupported Sec-WebSocket-Version
--- no_error_log
[error]



=== TEST 5: another version gets 426 with Sec-WebSocket-Version: 13
--- http_config eval: $::HttpConfig
--- config
    location = /chat { chat chat; chat_user $arg_user; }
--- request
GET /chat?user=ann
--- more_headers
Upgrade: websocket
Connection: Upgrade, close
Sec-WebSocket-Version: 8
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==
--- error_code: 426
--- response_headers
Sec-WebSocket-Version: 13
--- error_log
chat: missing or unsupported Sec-WebSocket-Version
--- no_error_log
[error]



=== TEST 6: missing key gets 400
--- http_config eval: $::HttpConfig
--- config
    location = /chat { chat chat; chat_user $arg_user; }
--- request
GET /chat?user=ann
--- more_headers
Upgrade: websocket
Connection: Upgrade, close
Sec-WebSocket-Version: 13
--- error_code: 400
--- response_body_like: 400 Bad Request
--- no_error_log
[error]



=== TEST 7: a key that is not 16 bytes of base64 gets 400
--- http_config eval: $::HttpConfig
--- config
    location = /chat { chat chat; chat_user $arg_user; }
--- request
GET /chat?user=ann
--- more_headers
Upgrade: websocket
Connection: Upgrade, close
Sec-WebSocket-Version: 13
Sec-WebSocket-Key: c2hvcnQ=
--- error_code: 400
--- response_body_like: 400 Bad Request
--- no_error_log
[error]



=== TEST 8: empty user gets 401 before any upgrade
--- http_config eval: $::HttpConfig
--- config
    location = /chat { chat chat; chat_user $arg_user; }
--- request
GET /chat
--- more_headers
Upgrade: websocket
Connection: Upgrade, close
Sec-WebSocket-Version: 13
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==
--- error_code: 401
--- response_body_like: 401 Authorization Required
--- no_error_log
[error]



=== TEST 9: an origin not listed gets 403
--- http_config eval: $::HttpConfig
--- config
    location = /chat {
        chat chat; chat_user $arg_user;
        chat_origins https://app.example.com;
    }
--- request
GET /chat?user=ann
--- more_headers
Upgrade: websocket
Connection: Upgrade, close
Sec-WebSocket-Version: 13
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==
Origin: https://evil.example.com
--- error_code: 403
--- response_body_like: 403 Forbidden
--- no_error_log
[error]



=== TEST 10: a listed origin is upgraded
--- http_config eval: $::HttpConfig
--- config
    location = /chat {
        chat chat; chat_user $arg_user;
        chat_origins https://app.example.com;
    }
--- raw_request eval
"GET /chat?user=ann HTTP/1.1\r
Host: localhost\r
Upgrade: websocket\r
Connection: keep-alive, Upgrade\r
Sec-WebSocket-Version: 13\r
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r
Origin: https://app.example.com\r
\r
"
--- abort
--- error_code: 101
--- timeout: 1
--- raw_response_headers_like: ^HTTP/1.1 101 Switching Protocols\r\n
--- no_error_log
[error]



=== TEST 11: no Origin (not a browser) is allowed even with chat_origins
--- http_config eval: $::HttpConfig
--- config
    location = /chat {
        chat chat; chat_user $arg_user;
        chat_origins https://app.example.com;
    }
--- raw_request eval
"GET /chat?user=ann HTTP/1.1\r
Host: localhost\r
Upgrade: websocket\r
Connection: Upgrade\r
Sec-WebSocket-Version: 13\r
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r
\r
"
--- abort
--- error_code: 101
--- timeout: 1
--- raw_response_headers_like: ^HTTP/1.1 101 Switching Protocols\r\n
--- no_error_log
[error]



=== TEST 12: deny in the access phase applies before the upgrade
--- http_config eval: $::HttpConfig
--- config
    location = /chat { deny all; chat chat; chat_user $arg_user; }
--- request
GET /chat?user=ann
--- more_headers
Upgrade: websocket
Connection: Upgrade, close
Sec-WebSocket-Version: 13
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==
--- error_code: 403
--- response_body_like: 403 Forbidden
--- error_log
access forbidden by rule



=== TEST 13: auth_basic applies before the upgrade
--- http_config eval: $::HttpConfig
--- config
    location = /chat {
        auth_basic "chat";
        auth_basic_user_file htpasswd;
        chat chat; chat_user $remote_user;
    }
--- user_files
>>> htpasswd
ann:{PLAIN}secret
--- request
GET /chat
--- more_headers
Upgrade: websocket
Connection: Upgrade, close
Sec-WebSocket-Version: 13
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==
--- error_code: 401
--- response_headers_like
WWW-Authenticate: Basic realm="chat"
--- no_error_log
[error]



=== TEST 14: a user id that is not UTF-8 gets 400
--- http_config eval: $::HttpConfig
--- config
    location = /chat { chat chat; chat_user $http_x_user; }
--- raw_request eval
"GET /chat HTTP/1.1\r
Host: localhost\r
X-User: \xff\xfe\r
Upgrade: websocket\r
Connection: Upgrade, close\r
Sec-WebSocket-Version: 13\r
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r
\r
"
--- error_code: 400
--- response_body_like: 400 Bad Request
--- no_error_log
[error]



=== TEST 15: a POST upgrade is refused with 405
--- http_config eval: $::HttpConfig
--- config
    location = /chat { chat chat; chat_user $arg_user; }
--- request
POST /chat?user=ann
--- more_headers
Upgrade: websocket
Connection: Upgrade, close
Sec-WebSocket-Version: 13
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==
--- error_code: 405
--- response_body_like: 405 Not Allowed
--- no_error_log
[error]



=== TEST 16: a user id holding U+0000 gets 400
--- http_config eval: $::HttpConfig
--- config
    location = /chat { chat chat; chat_user $remote_user; }
--- request
GET /chat
--- more_headers
Authorization: Basic YQBiOng=
Upgrade: websocket
Connection: Upgrade, close
Sec-WebSocket-Version: 13
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==
--- error_code: 400
--- response_body_like: 400 Bad Request
--- no_error_log
[error]
