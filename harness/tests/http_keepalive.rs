//! The HTTP client against a server that closes idle kept-alive connections, as uvicorn does after 5 s (vLLM,
//! llama.cpp's Python server): a request after a longer pause goes out on a new connection, never on the closed one.
//! The client's runtime does not run between the two requests (as parity's does not), so nothing but the pool's idle
//! timeout can keep the dead connection out. Found under load in the test command: parity against llama.cpp's server
//! failed with "error sending request" after a prompt that took the server more than 5 s.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use nano_vllm_harness::http::load::{POOL_IDLE_TIMEOUT, http_client};

/// Serves `connections` connections, one request each with keep-alive, closing each `close_after` after answering.
fn server(connections: usize, close_after: Duration) -> (std::net::SocketAddr, std::thread::JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let mut answered = 0;
        for _ in 0..connections {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let n = conn.read(&mut buf).unwrap();
            assert!(n > 0 && buf[..n].starts_with(b"GET /"), "{:?}", String::from_utf8_lossy(&buf[..n]));
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nok").unwrap();
            answered += 1;
            let conn = std::sync::Arc::new(conn);
            let closing = conn.clone();
            // Closed later, without a word: the client learns it only from the FIN.
            std::thread::spawn(move || {
                std::thread::sleep(close_after);
                let _ = closing.shutdown(std::net::Shutdown::Both);
            });
        }
        answered
    });
    (addr, handle)
}

#[test]
fn a_connection_the_server_closed_while_idle_is_not_reused() {
    // The server closes an idle connection after 1.5 x the pool's idle timeout (uvicorn: 5 s against 2 s); the
    // client pauses past both before its second request.
    let close_after = POOL_IDLE_TIMEOUT * 3 / 2;
    let (addr, server) = server(2, close_after);
    let client = http_client().unwrap();
    let url = format!("http://{addr}/v1/models");
    // One current-thread runtime, as parity has, run only during a request: in between, the pooled connection's task
    // cannot see the server's FIN.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let get =
        |client: &reqwest::Client| rt.block_on(async { client.get(&url).send().await.map(|r| r.status().as_u16()) });
    assert_eq!(get(&client).unwrap(), 200);
    std::thread::sleep(close_after + Duration::from_millis(500));
    let second = get(&client);
    assert_eq!(
        second.as_ref().map_err(|e| e.to_string()),
        Ok(&200),
        "the second request went out on the closed connection"
    );
    assert_eq!(server.join().unwrap(), 2, "each request on a connection of its own");
}
