//! Context through a message queue: the publisher writes its context into the AMQP
//! message headers (`FieldTable`, what lapin's `BasicProperties::with_headers` takes),
//! the consumer handles each message in the context its headers carry.
//!
//! `cargo run -p tasklocal --example amqp_headers --features amqp,tokio`
//!
//! No broker is needed to run it: a tokio channel stands in for the queue, and each
//! message's headers go through the AMQP 0-9-1 wire encoding on the way. With lapin,
//! pass the table to `BasicProperties::default().with_headers(headers)` when publishing
//! and read it back from `delivery.properties.headers()` when consuming.

use amq_protocol_types::FieldTable;
use tasklocal::http::{extract, inject, TraceContext};
use tasklocal::mdc;
use tokio::sync::mpsc;

/// A message as a queue carries it: headers and a body.
struct Message {
    headers: FieldTable,
    body: String,
}

/// Encodes the headers as AMQP puts them on the wire and parses them back.
fn over_the_wire(headers: &FieldTable) -> FieldTable {
    let serialize = amq_protocol_types::generation::gen_field_table(headers);
    let (bytes, _) = cookie_factory::r#gen(serialize, Vec::new()).unwrap();
    amq_protocol_types::parsing::parse_field_table(&bytes[..])
        .unwrap()
        .1
}

#[tokio::main]
async fn main() {
    let (queue, mut deliveries) = mpsc::unbounded_channel::<Message>();

    // The consumer: one long-lived task; each message is handled in a task of its own,
    // seeded from the message's headers.
    let consumer = tokio::spawn(async move {
        let mut handled = Vec::new();
        while let Some(message) = deliveries.recv().await {
            let handle = extract(&message.headers).task(async move {
                let request_id = mdc::get("request_id").unwrap_or_default();
                let trace = TraceContext::current().unwrap().traceparent().trace_id();
                println!(
                    "consumer: {} (request {request_id}, trace {trace})",
                    message.body
                );
                request_id
            });
            handled.push(handle.await);
        }
        handled
    });

    // Publishers: requests that each send a message with their own context.
    for n in 1..=3 {
        let queue = queue.clone();
        tasklocal::spawn(async move {
            mdc::insert("request_id", format!("req-{n}"));
            mdc::insert("tenant", "acme");
            let mut headers = FieldTable::default();
            inject(&mut headers); // baggage, traceparent
            let body = format!("order {n} placed");
            println!("publisher: {body}");
            let headers = over_the_wire(&headers);
            queue.send(Message { headers, body }).unwrap();
        })
        .await
        .unwrap();
    }
    drop(queue);

    let handled = consumer.await.unwrap();
    assert_eq!(handled, ["req-1", "req-2", "req-3"]);
    println!("every message was handled in its publisher's context");
}
