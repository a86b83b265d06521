//! The client library against a real broker process: 100,000 messages come back exactly, in
//! order within each queue, and a long poll delivers a new message within 50 ms.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use smq_client::{Admin, ClientConfig, Consumer, Message, Producer, StartFrom};
use smq_tests::{keyed, runtime, wait_for, Broker};

#[test]
fn library_round_trips_100000_messages_in_order_per_key() {
    let broker = Broker::start(&[]);
    let config = ClientConfig::new(broker.addr.to_string());
    let keys = 16;
    let total = 100_000;
    runtime().block_on(async {
        let producer = smq_tests::topic_and_producer(&config, "orders", 4).await;
        let pending = keyed::send(&producer, "orders", keys, total).await;
        // Every send is acknowledged with its queue and offset; one key stays on one queue.
        let mut queue_of_key: HashMap<usize, u32> = HashMap::new();
        for (key, delivery) in pending {
            let delivery = delivery.wait().await.unwrap();
            assert_eq!(
                *queue_of_key.entry(key).or_insert(delivery.queue_id),
                delivery.queue_id
            );
        }

        let mut consumer = Consumer::connect(config, "orders", None, StartFrom::Earliest)
            .await
            .unwrap();
        keyed::read_in_order(&mut consumer, keys, total, "messages", |_| true).await;
    });
}

#[test]
fn a_long_poll_delivers_a_new_message_within_a_fifth_of_its_wait() {
    let broker = Broker::start(&[]);
    let config = ClientConfig::new(broker.addr.to_string());
    let runtime = runtime();
    runtime.block_on(async {
        Admin::connect(config.clone())
            .await
            .unwrap()
            .create_topic("live", 1)
            .await
            .unwrap();
    });
    let mut consumer = broker
        .smq()
        .args([
            "consume",
            "live",
            "--group",
            "g",
            "--from",
            "latest",
            "--count",
            "5",
            "--idle-timeout",
            "30",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (arrivals, received) = std::sync::mpsc::channel();
    let stdout = consumer.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = arrivals.send((Instant::now(), line.unwrap()));
        }
    });
    // Wait until the consumer's fetch is parked at the end of the queue.
    wait_for("the consumer's long poll", Duration::from_secs(10), || {
        (broker
            .metric("smq_fetches_waiting")
            .is_some_and(|waiting| waiting >= 1.0))
        .then_some(())
    });
    let mut config = config;
    config.linger_ms = 0;
    let producer = runtime.block_on(Producer::connect(config)).unwrap();
    for round in 0..5 {
        let body = format!("ping-{round}");
        let sent_at = Instant::now();
        runtime
            .block_on(producer.send("live", Message::from_body(body.clone())))
            .unwrap();
        let (arrived_at, line) = received
            .recv_timeout(Duration::from_secs(5))
            .expect("delivered");
        assert_eq!(line, body);
        // A fetch that did not wake on the append would answer when its wait (the client's
        // default fetch_max_wait_ms, 500 ms) ends: at a uniform time within it, so five rounds
        // all under a fifth of it would happen by chance once in 3,000 runs.
        let latency = arrived_at - sent_at;
        assert!(
            latency <= Duration::from_millis(100),
            "round {round}: delivered {latency:?} after the send"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    consumer.wait().unwrap();
}

/// When a Produce makes a consumer's long poll ready, the broker answers the consumer first: its
/// answer is the hop on the end-to-end path, the producer's is not. Compared by the kernel's
/// receive timestamps of the two answers (SO_TIMESTAMPNS), which on loopback are the order the
/// broker wrote them in, on a broker of one worker thread.
#[test]
fn a_long_poll_woken_by_a_produce_is_answered_before_the_producer() {
    use smq_client::protocol::record_batch::{encode, Message as BatchMessage};
    use smq_client::protocol::request::{Acks, FetchRequest, MetadataRequest, ProduceRequest};
    use smq_client::protocol::Request;
    use smq_tests::raw::Raw;

    let broker = Broker::start(&["--worker-threads", "1"]);
    let config = ClientConfig::new(broker.addr.to_string());
    runtime().block_on(async {
        let admin = Admin::connect(config).await.unwrap();
        admin.create_topic("order", 1).await.unwrap();
    });
    let mut consumer = Raw::handshake(broker.addr);
    let mut producer = Raw::handshake(broker.addr);
    receive_timestamps(&consumer.stream);
    receive_timestamps(&producer.stream);
    for offset in 0..20 {
        consumer.send(&Request::Fetch(FetchRequest {
            topic: "order".into(),
            queue_id: 0,
            offset,
            max_bytes: 1 << 20,
            max_wait_ms: 10_000,
            topic_id: 0,
        }));
        // The broker starts a connection's requests in order: once this is answered, the
        // fetch above is waiting.
        consumer.send(&Request::Metadata(MetadataRequest {
            topics: vec!["order".into()],
        }));
        let (_, metadata) = read_frame_with_arrival(&mut consumer.stream);
        assert!(!metadata.is_empty());
        producer.send(&Request::Produce(ProduceRequest {
            topic: "order".into(),
            queue_id: 0,
            acks: Acks::Written,
            timeout_ms: 0,
            batch: encode("order", 0, &[BatchMessage::from_body(vec![7; 100])]).into(),
        }));
        let (produce_answered, _) = read_frame_with_arrival(&mut producer.stream);
        let (fetch_answered, fetched) = read_frame_with_arrival(&mut consumer.stream);
        assert!(
            fetched.len() > 100,
            "round {offset}: the fetch answer holds the batch"
        );
        assert!(
            fetch_answered <= produce_answered,
            "round {offset}: the consumer's answer arrived {:?} after the producer's",
            fetch_answered - produce_answered
        );
    }
}

/// Asks the kernel to stamp what `stream` receives with the time it arrived.
fn receive_timestamps(stream: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: sets an integer option on a socket this process owns.
    let set = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        set,
        0,
        "SO_TIMESTAMPNS: {}",
        std::io::Error::last_os_error()
    );
}

/// Reads one whole response frame from `stream` (nothing else may be in flight on it): when its
/// first bytes arrived (the kernel's stamp, as a duration since the epoch) and its bytes.
fn read_frame_with_arrival(stream: &mut std::net::TcpStream) -> (Duration, Vec<u8>) {
    use std::os::fd::AsRawFd;
    let (mut frame, mut arrived) = (Vec::new(), None);
    while frame.len() < 4
        || frame.len() < 4 + u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize
    {
        let mut data = [0u8; 65536];
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the call.
        let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
        header.msg_iov = &mut iov;
        header.msg_iovlen = 1;
        header.msg_control = control.as_mut_ptr().cast();
        header.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: reads into `data` and `control`, both as long as the header says.
        let read = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut header, 0) };
        assert!(
            read > 0,
            "recvmsg: {read}, {}",
            std::io::Error::last_os_error()
        );
        frame.extend_from_slice(&data[..read as usize]);
        // SAFETY: walks the control messages the kernel wrote into `control`.
        let mut message = unsafe { libc::CMSG_FIRSTHDR(&header) };
        while !message.is_null() {
            // SAFETY: `message` points into `control`, as CMSG_FIRSTHDR/CMSG_NXTHDR checked.
            let (level, kind) = unsafe { ((*message).cmsg_level, (*message).cmsg_type) };
            if arrived.is_none() && level == libc::SOL_SOCKET && kind == libc::SCM_TIMESTAMPNS {
                // SAFETY: an SCM_TIMESTAMPNS message carries one timespec.
                let stamp: libc::timespec =
                    unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(message).cast()) };
                arrived = Some(Duration::new(stamp.tv_sec as u64, stamp.tv_nsec as u32));
            }
            // SAFETY: as above.
            message = unsafe { libc::CMSG_NXTHDR(&header, message) };
        }
    }
    (arrived.expect("the kernel stamped the answer"), frame)
}
