//! A WebSocket client that speaks roomcast's JSON protocol.

use super::*;

/// A WebSocket client speaking roomcast's JSON protocol.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn connect(url: &str) -> Self {
        let (ws, response) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .expect("WebSocket handshake timed out")
            .unwrap_or_else(|e| panic!("WebSocket upgrade to {url} failed: {e}"));
        assert_eq!(response.status(), 101);
        Self { ws }
    }

    /// The next message other than pings and pongs; `None` at the end of
    /// the stream. Fails after [`TIMEOUT`].
    pub async fn recv(&mut self) -> Option<Message> {
        loop {
            let next = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("nothing received within {TIMEOUT:?}"));
            match next {
                None => return None,
                Some(Err(e)) => panic!("WebSocket read failed: {e}"),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(m)) => return Some(m),
            }
        }
    }

    /// The next JSON event; fails on anything else (a close included).
    pub async fn recv_json(&mut self) -> Value {
        match self.recv().await {
            Some(Message::Text(t)) => serde_json::from_str(&t)
                .unwrap_or_else(|e| panic!("server sent invalid JSON ({e}): {t}")),
            other => panic!("expected a JSON event, got {other:?}"),
        }
    }

    /// The next event, which must have `type` == `kind`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let event = self.recv_json().await;
        assert_eq!(event["type"], kind, "expected a {kind} event, got {event}");
        event
    }

    /// The next event, which must be an `error` with `code`.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let event = self.expect("error").await;
        assert_eq!(event["code"], code, "wrong error: {event}");
        assert!(
            event["message"].as_str().is_some_and(|m| !m.is_empty()),
            "error without a message: {event}"
        );
        event
    }

    /// Asserts the next event is an `error` with `code` whose message
    /// mentions `part`; returns it.
    pub async fn expect_error_saying(&mut self, code: &str, part: &str) -> Value {
        let event = self.expect_error(code).await;
        let message = event["message"].as_str().unwrap_or_default();
        assert!(message.contains(part), "expected {part:?} in {event}");
        event
    }

    /// Sends a message with `url` (an upload's) as its attachment.
    pub async fn send_attachment(&mut self, content: &str, url: &str) {
        self.send_json(serde_json::json!({
            "type": "message", "content": content, "attachment": {"url": url}
        }))
        .await;
    }

    /// Reads events until one of type `kind`, returning it (for setups whose
    /// ordering is not under test).
    pub async fn skip_to(&mut self, kind: &str) -> Value {
        loop {
            let event = self.recv_json().await;
            if event["type"] == kind {
                return event;
            }
        }
    }

    /// Reads events until one whose `type` is one of `kinds`.
    pub async fn skip_to_any(&mut self, kinds: &[&str]) -> Value {
        loop {
            let event = self.recv_json().await;
            if kinds.iter().any(|k| event["type"] == *k) {
                return event;
            }
        }
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send(Message::text(value.to_string())).await;
    }

    pub async fn send(&mut self, message: Message) {
        tokio::time::timeout(TIMEOUT, self.ws.send(message))
            .await
            .expect("send timed out")
            .expect("send failed");
    }

    /// Sends `ping` and expects `pong` as the very next event: proves the
    /// connection is open and nothing else was queued before it.
    pub async fn roundtrip(&mut self) {
        self.send_json(serde_json::json!({"type": "ping"})).await;
        self.expect("pong").await;
    }

    /// Posts `content` and returns the broadcast `message` as this client
    /// sees it (the next event must be that message).
    pub async fn post(&mut self, content: &str) -> Value {
        self.send_json(serde_json::json!({"type": "message", "content": content}))
            .await;
        let m = self.expect("message").await;
        assert_eq!(m["content"], content);
        m
    }

    /// Reads until the server's close frame, skipping data frames, and
    /// asserts its code.
    pub async fn expect_close(&mut self, code: u16) {
        let (got, reason) = self.close_frame().await;
        assert_eq!(got, code, "closed with {got} ({reason})");
    }

    /// The code of the close frame that ends the stream, skipping events.
    pub async fn close_code(&mut self) -> u16 {
        self.close_frame().await.0
    }

    async fn close_frame(&mut self) -> (u16, String) {
        loop {
            match self.recv().await {
                Some(Message::Close(Some(frame))) => {
                    return (u16::from(frame.code), frame.reason.to_string());
                }
                Some(Message::Close(None)) => panic!("close frame without a code"),
                Some(_) => continue,
                None => panic!("stream ended without a close frame"),
            }
        }
    }

    /// Sends a normal close and waits for the stream to end.
    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            }))
            .await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(TIMEOUT, self.ws.next()).await {}
    }
}
