# Self-test of the clean-room Test::Nginx::Socket block runner (t/runner)
# with stock nginx only: no chat module needed.  Some blocks check what the
# clean-room runner documents beyond the real one (block_test_count's
# counting, how much of error.log the checks see), so under the real
# Test::Nginx (make test-real) the file skips itself.

use Test::Nginx::Socket;

{
    no warnings 'once';
    plan skip_all => 'self-test of the clean-room runner (t/runner); the '
                     . "real Test::Nginx is loaded ($INC{'Test/Nginx/Socket.pm'})"
        unless $Test::Nginx::Socket::CleanRoom;
}

$ENV{TEST_NGINX_GREETING} = 'howdy';
env_to_nginx('TEST_NGINX_GREETING');

repeat_each(2);

# 19 blocks (block 20 is SKIPped, blocks() does not count it); 2 checks
# each (status + body) plus 15 extra checks:
# blocks 1, 3, 6, 8 and 16 have +1, block 4 has +5, block 9 has +2,
# block 14 (must_die: died + 2 error_log + 1 no_error_log) has +2,
# block 17 has -1 (ignore_response: just one no_error_log check),
# block 19 has +2 (status + 3 checks)
plan tests => repeat_each() * (blocks() * 2 + 15);

no_long_string();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: sanity
--- config
    location = /hello {
        return 200 "hello\n";
    }
--- request
GET /hello
--- response_body
hello
--- no_error_log
[error]



=== TEST 2: one-line sections
--- config
    location = /hello {
        return 200 "hello";
    }
--- request: GET /hello
--- response_body: hello
--- error_code: 200



=== TEST 3: 404 and an expected error log line
--- request
GET /nope.html
--- error_code: 404
--- response_body_like: 404 Not Found
--- error_log
No such file or directory



=== TEST 4: response headers
--- config
    location = /h {
        add_header X-Foo bar;
        return 200 "ok\n";
    }
--- request
GET /h
--- response_headers
X-Foo: bar
Content-Type: text/plain
!X-Bar
--- response_headers_like
Server: nginx/[\d.]+
Content-Length: \d+
--- response_body
ok



=== TEST 5: more_headers
--- config
    location = /echo_hdr {
        return 200 "[$http_x_test][$http_x_other]\n";
    }
--- request
GET /echo_hdr
--- more_headers
X-Test: abc
X-Other: d e f
--- response_body
[abc][d e f]



=== TEST 6: raw_request (HTTP/1.0)
--- config
    location = /hello {
        return 200 "hello\n";
    }
--- raw_request eval
"GET /hello HTTP/1.0\r\nHost: localhost\r\n\r\n"
--- response_headers
Connection: close
--- response_body
hello



=== TEST 7: request body via request eval
--- config
    location = /len {
        return 200 "len=$content_length method=$request_method\n";
    }
--- request eval
"POST /len\nhello world"
--- response_body
len=11 method=POST



=== TEST 8: chunked response body is decoded
--- config
    location = /chunked {
        sub_filter_types text/plain;
        sub_filter world nginx;
        return 200 "hello world\n";
    }
--- request
GET /chunked
--- response_headers
Transfer-Encoding: chunked
--- response_body
hello nginx



=== TEST 9: close-delimited body (HTTP/1.0, no Content-Length)
--- config
    location = /chunked {
        sub_filter_types text/plain;
        sub_filter world nginx;
        return 200 "hello world\n";
    }
--- request
GET /chunked HTTP/1.0
--- response_headers
!Content-Length
!Transfer-Encoding
--- response_body
hello nginx



=== TEST 10: user_files
--- user_files
>>> foo.txt
hi there
>>> sub/bar.txt
bar
--- request
GET /foo.txt
--- response_body
hi there



=== TEST 11: $TEST_NGINX_* substitution
--- config
    location = /vars {
        return 200 "$TEST_NGINX_GREETING port=$TEST_NGINX_SERVER_PORT\n";
    }
--- request
GET /vars
--- response_body_like: ^howdy port=\d+$



=== TEST 12: grep_error_log with a string
--- request
GET /nope2.html
--- error_code: 404
--- grep_error_log: No such file or directory
--- grep_error_log_out
No such file or directory



=== TEST 13: grep_error_log with a regex
--- request
GET /nope3.html
--- error_code: 404
--- grep_error_log eval
qr/\[error\]/
--- grep_error_log_out
[error]



=== TEST 14: must_die on a bad directive
--- config
    foo_bar_baz on;
--- must_die
--- error_log eval
[qr/\[emerg\] .*unknown directive "foo_bar_baz"/, "nginx.conf"]
--- no_error_log
[alert]



=== TEST 15: timeout tolerated with abort
--- user_files eval
[["big.txt", "a" x 3000]]
--- config
    location = /big.txt {
        limit_rate_after 1000;
        limit_rate 1;
    }
--- request
GET /big.txt
--- timeout: 0.5
--- abort
--- response_body_like: ^a+$



=== TEST 16: main_config, http_config and per-block log_level
--- main_config
    env TEST_NGINX_OTHER;
--- http_config
    map $uri $mapped {
        default "mapped";
    }
--- config
    location = /map {
        return 200 "$mapped\n";
    }
--- log_level: warn
--- request
GET /map
--- response_body
mapped
--- no_error_log
[debug]



=== TEST 17: ignore_response
--- config
    location = /drop {
        return 444;
    }
--- request
GET /drop
--- ignore_response
--- no_error_log
[error]



=== TEST 18: indented request with a leading comment
--- config
    location = /hello {
        return 200 "hello\n";
    }
--- request
    # a comment line
    GET /hello?a=b
--- response_body
hello



=== TEST 19: raw_response_headers_like/unlike and response_body_unlike
--- config
    location = /hello {
        return 200 "hello\n";
    }
--- request
GET /hello
--- raw_response_headers_like: ^HTTP/1.1 200 OK\r\nServer: nginx[^\r]*\r\n.*Content-Length: 6\r\n.*\r\n\z
--- raw_response_headers_unlike: X-Nope|\r\n\r\n
--- response_body_unlike: bye



=== TEST 20: skipped block
--- config
    this is not valid;
--- request
GET /
--- SKIP
