//! A streamed response: the server-sent events of a request's choices, interleaved as their engine events arrive
//! (split from [`super::handlers`], which starts the request and answers it whole).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use axum::response::sse::Event as SseEvent;
use futures_util::stream::{self, Stream};
use serde_json::Value;

use super::AppState;
use super::api::Api;
use super::engine_loop::Event;
use super::handlers::{Choice, Started, apply};
use super::response;

/// The next event of any unfinished choice, taking them in turn from `*next` so that none starves the others.
fn next_event<'a>(choices: &'a mut [Choice], next: &'a mut usize) -> impl Future<Output = (usize, Option<Event>)> + 'a {
    std::future::poll_fn(move |cx| {
        let k = choices.len();
        for step in 0..k {
            let i = (*next + step) % k;
            let c = &mut choices[i];
            if c.generation.finish.is_some() {
                continue;
            }
            if let Poll::Ready(event) = c.events.poll_recv(cx) {
                *next = (i + 1) % k;
                return Poll::Ready((i, event));
            }
        }
        Poll::Pending
    })
}

/// Where a stream is.
enum Phase {
    /// Chat: the role chunk of each choice, from this one on.
    Roles(usize),
    Tokens,
    Usage,
    Done,
    End,
}

struct StreamState {
    s: Arc<AppState>,
    st: Started,
    phase: Phase,
    /// The choice whose events are looked at first next time.
    next: usize,
}

fn data(value: &Value) -> SseEvent {
    SseEvent::default().data(value.to_string())
}

/// The events of a streamed response: (chat: the role of each choice), a chunk per piece of text of any choice (its
/// `index` says which), each choice's final chunk with its finish reason, the usage chunk when asked, `[DONE]`. An
/// engine failure mid-stream is an `{"error": ...}` event.
pub(crate) fn sse_stream(s: Arc<AppState>, st: Started) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let state = StreamState { s, st, phase: Phase::Roles(0), next: 0 };
    stream::unfold(state, |mut x| async move {
        let usage = x.st.request.include_usage;
        loop {
            match x.phase {
                Phase::Roles(i) => {
                    if x.st.request.api == Api::Chat && i < x.st.choices.len() {
                        x.phase = Phase::Roles(i + 1);
                        return Some((Ok(data(&x.st.header.role_chunk(i))), x));
                    }
                    x.phase = Phase::Tokens;
                }
                Phase::Tokens => {
                    if x.st.choices.iter().all(|c| c.generation.finish.is_some()) {
                        x.phase = Phase::Usage;
                        continue;
                    }
                    let (i, event) = next_event(&mut x.st.choices, &mut x.next).await;
                    let c = &mut x.st.choices[i];
                    match apply(&x.s, c, event) {
                        Ok(delta) => {
                            let last = c.generation.finish.is_some();
                            if last {
                                // Ended (by the engine, or by a stop string: then the engine aborts it now).
                                c.events.close();
                            } else if delta.text.is_empty() && delta.logprobs.is_empty() {
                                continue;
                            }
                            let choice = c.generation.chunk_choice(&delta, c.offset, last);
                            c.offset += delta.text.len();
                            return Some((Ok(data(&x.st.header.chunk(choice))), x));
                        }
                        Err(e) => {
                            x.phase = Phase::Done;
                            return Some((Ok(data(&e.body())), x));
                        }
                    }
                }
                Phase::Usage => {
                    x.phase = Phase::Done;
                    if usage {
                        let u = response::usage(x.st.choices.iter().map(|c| &c.generation), x.st.request.n);
                        return Some((Ok(data(&x.st.header.usage_chunk(u))), x));
                    }
                }
                Phase::Done => {
                    x.phase = Phase::End;
                    return Some((Ok(SseEvent::default().data("[DONE]")), x));
                }
                Phase::End => return None,
            }
        }
    })
}
