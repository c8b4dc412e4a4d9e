//! One transfer's task: its own socket, the checks before the first reply
//! (`policy`), the pure state machine (`transfer`) driven over the socket,
//! and the read-ahead buffer that feeds it from the file.

use std::io::IoSlice;

use super::*;

/// Keeps the active-transfer gauge right even if the task is cancelled.
struct ActiveGuard(Arc<Counters>);

impl ActiveGuard {
    fn new(counters: &Arc<Counters>) -> Self {
        bump(&counters.active, 1);
        Self(Arc::clone(counters))
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(super) async fn run_transfer(
    shared: Arc<Shared>,
    request: OwnedRequest,
    peer: SocketAddr,
    local_ip: IpAddr,
    stop: watch::Receiver<bool>,
    _slots: Slots,
) {
    let _active = ActiveGuard::new(&shared.counters);
    let started = Instant::now();
    let mut record = TransferRecord {
        peer,
        requested: request.filename.clone(),
        path: None,
        mac: None,
        negotiated: None,
        outcome: TransferOutcome::Aborted {
            reason: "not started".into(),
        },
        bytes_sent: 0,
        duration: Duration::ZERO,
    };
    record.outcome = match UdpSocket::bind(SocketAddr::new(local_ip, 0)).await {
        Ok(socket) => serve_request(&shared, &socket, &request, stop, &mut record).await,
        Err(e) => TransferOutcome::Aborted {
            reason: format!("cannot open a transfer socket on {local_ip}: {e}"),
        },
    };
    record.duration = started.elapsed();
    finish(&shared, &record);
}

/// Refuses the request from the transfer socket.
async fn refuse(socket: &UdpSocket, peer: SocketAddr, refusal: &Refusal) -> TransferOutcome {
    if let Err(e) = socket
        .send_to(&error_packet(refusal.code, refusal.client_message), peer)
        .await
    {
        debug!(%peer, error = %e, "could not send TFTP error");
    }
    TransferOutcome::Refused {
        code: refusal.code,
        reason: refusal.reason.clone(),
    }
}

/// Opens the first candidate path that exists, wrapping it for netascii.
fn open_blocking(
    source: &dyn FileSource,
    candidates: Vec<SafePath>,
    netascii: bool,
) -> Result<(SafePath, Arc<dyn FileContent>), OpenError> {
    for candidate in candidates {
        match source.open(&candidate) {
            Ok(content) if netascii => {
                let converted: Arc<dyn FileContent> = Arc::new(NetasciiFile::new(content)?);
                return Ok((candidate, converted));
            }
            Ok(content) => return Ok((candidate, content)),
            Err(OpenError::NotFound) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(OpenError::NotFound)
}

/// Everything from the first reply to the end of one transfer.
async fn serve_request(
    shared: &Arc<Shared>,
    socket: &UdpSocket,
    request: &OwnedRequest,
    mut stop: watch::Receiver<bool>,
    record: &mut TransferRecord,
) -> TransferOutcome {
    let peer = record.peer;
    let file = request.filename.escape_debug().to_string();
    let (path, netascii) = match policy::check_request(&request.filename, &request.mode) {
        Ok(accepted) => (accepted.path, accepted.netascii),
        Err(refusal) => {
            warn!(%peer, %file, reason = %refusal.reason, "refused TFTP request");
            return refuse(socket, peer, &refusal).await;
        }
    };
    record.mac = path.mac;
    let candidates: Vec<SafePath> = path.candidates().cloned().collect();
    let source = Arc::clone(&shared.source);
    let opened =
        tokio::task::spawn_blocking(move || open_blocking(source.as_ref(), candidates, netascii))
            .await;
    let (served, content) = match opened {
        Ok(Ok(found)) => found,
        Ok(Err(error)) => {
            let refusal = policy::refusal_for_open(&error);
            match error {
                OpenError::NotFound => info!(%peer, %file, "TFTP file not found"),
                _ => warn!(%peer, %file, reason = %refusal.reason, "refused TFTP request"),
            }
            return refuse(socket, peer, &refusal).await;
        }
        Err(e) => {
            return TransferOutcome::Aborted {
                reason: format!("open task failed: {e}"),
            };
        }
    };
    record.path = Some(served);

    let options: Vec<TftpOption<'_>> = request
        .options
        .iter()
        .map(|(name, value)| TftpOption { name, value })
        .collect();
    let size = content.size();
    let negotiated = negotiate(&options, (!netascii).then_some(size), &shared.limits);
    let (mut transfer, mut pending) =
        ReadTransfer::start(peer, size, &negotiated, &shared.limits, Instant::now());
    record.negotiated = Some(negotiated);
    debug!(
        %peer, %file, size, block_size = transfer.block_size(),
        window_size = transfer.window_size(), netascii, "TFTP transfer started"
    );

    let mut reader = WindowReader::new(content);
    let mut sender = Sender {
        socket,
        segmentation: true,
        peer,
        block_size: transfer.block_size(),
        packet: Vec::with_capacity(DATA_HEADER_LEN + usize::from(transfer.block_size())),
    };
    let mut incoming = vec![0u8; TRANSFER_BUFFER];
    // One timer for the whole transfer, and moved lazily: every block moves
    // the transfer's deadline later, but the timer is only moved when it
    // fires early (or must fire sooner), so a lockstep transfer touches the
    // timer wheel about once per timeout, not once per block.
    let retransmit = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(retransmit);
    let mut timer_armed_for: Option<Instant> = None;
    // Registered once: a new waiter on the shutdown signal per block cost
    // a lock on its waiter list each.
    let stopping = stop.wait_for(|stop| *stop);
    tokio::pin!(stopping);
    let mut stopped = false;
    loop {
        let sent = sender.send_all(&mut reader, &pending).await;
        bump(&shared.counters.data_bytes_sent, sent.data_bytes);
        record.bytes_sent += sent.data_bytes;
        if let Err(e) = sent.read_result {
            let abort = transfer.abort(
                ErrorCode::NotDefined,
                "Error reading file",
                format!("reading the file failed: {e}"),
            );
            sender.send_all(&mut reader, &[abort]).await;
            break;
        }
        let Some(deadline) = transfer.deadline() else {
            break;
        };
        if timer_armed_for.is_none_or(|armed| armed > deadline) {
            retransmit
                .as_mut()
                .reset(tokio::time::Instant::from_std(deadline));
            timer_armed_for = Some(deadline);
        }
        pending = tokio::select! {
            _ = &mut stopping, if !stopped => {
                stopped = true;
                vec![transfer.abort(
                    ErrorCode::NotDefined,
                    "Server shutting down",
                    "server shutting down".into(),
                )]
            }
            () = &mut retransmit => {
                timer_armed_for = None;
                let now = Instant::now();
                if now < deadline {
                    // Fired for a deadline since moved: re-armed above.
                    Vec::new()
                } else {
                    transfer.handle_timeout(now)
                }
            }
            received = socket.recv_from(&mut incoming) => match received {
                Ok((len, from)) => {
                    let next = transfer.handle_datagram(from, &incoming[..len], Instant::now());
                    if answers_the_client(&next, peer) {
                        forget_readiness(socket);
                    }
                    next
                }
                Err(e) => {
                    debug!(%peer, error = %e, "TFTP transfer receive error");
                    Vec::new()
                }
            },
        };
    }
    transfer
        .outcome()
        .cloned()
        .unwrap_or(TransferOutcome::Aborted {
            reason: "ended without an outcome".into(),
        })
}

/// True when `next` is something to send, all of it to the transfer's
/// client: what a datagram that moved the transfer on asks. (A stray
/// sender's datagram is answered "unknown transfer ID" and must not make
/// the loop wait: the client's own may be queued behind it.)
fn answers_the_client(next: &[Transmit], peer: SocketAddr) -> bool {
    !next.is_empty()
        && next.iter().all(|transmit| match transmit {
            Transmit::Data { .. } => true,
            Transmit::Packet { to, .. } => *to == peer,
        })
}

/// Makes the next receive wait for the socket to signal a datagram instead
/// of trying first. tokio keeps a socket readable after a successful read,
/// so each block's receive began with a `recvfrom` that could only fail:
/// the client's answer is a round trip away. Called only when a datagram
/// moved the transfer on and there is something to send: the client answers
/// that (or the retransmission timer fires), and the signal for its answer
/// also brings any datagram still queued behind this one.
fn forget_readiness(socket: &UdpSocket) {
    // A closure that reports "would block" clears the readiness tokio saw
    // (and only that: a signal that came since is kept).
    let _ = socket.try_io(tokio::io::Interest::READABLE, || {
        Err::<(), _>(io::ErrorKind::WouldBlock.into())
    });
}

/// What one batch of sends did.
struct Sent {
    data_bytes: u64,
    read_result: io::Result<()>,
}

/// Sends one transfer's packets: DATA from the read-ahead buffer, windows
/// as segmented sends when the kernel can.
struct Sender<'a> {
    socket: &'a UdpSocket,
    /// Windows go out as one segmented send (UDP GSO) until the kernel
    /// refuses it for this transfer (no support, or a block larger than
    /// the path's MTU); then block by block.
    segmentation: bool,
    peer: SocketAddr,
    block_size: u16,
    /// Header and payload of a DATA sent on its own.
    packet: Vec<u8>,
}

impl Sender<'_> {
    /// Performs `pending` in order. Send errors are logged and otherwise
    /// ignored (the retransmission timer covers a lost packet); a read
    /// error stops the batch and is returned.
    async fn send_all(&mut self, reader: &mut WindowReader, pending: &[Transmit]) -> Sent {
        let mut sent = Sent {
            data_bytes: 0,
            read_result: Ok(()),
        };
        let span = pending
            .iter()
            .filter_map(|transmit| match transmit {
                Transmit::Data { offset, len, .. } => Some((*offset, *offset + *len as u64)),
                Transmit::Packet { .. } => None,
            })
            .reduce(|(start, end), (s, e)| (start.min(s), end.max(e)));
        if let Some((start, end)) = span
            && let Err(e) = reader.load(start, end).await
        {
            sent.read_result = Err(e);
            return sent;
        }
        let mut rest = pending;
        while let Some(first) = rest.first() {
            if let Transmit::Packet { to, bytes } = first {
                if let Err(e) = self.socket.send_to(bytes, *to).await {
                    debug!(peer = %to, error = %e, "TFTP send failed");
                }
                rest = &rest[1..];
                continue;
            }
            let run = rest
                .iter()
                .position(|transmit| matches!(transmit, Transmit::Packet { .. }))
                .unwrap_or(rest.len());
            let (window, after) = rest.split_at(run);
            match self.send_window(reader, window).await {
                Ok(bytes) => sent.data_bytes += bytes,
                Err(e) => {
                    sent.read_result = Err(e);
                    return sent;
                }
            }
            rest = after;
        }
        sent
    }

    /// Sends a run of DATA, in segmented sends of up to a kernel's limit
    /// where every block but the run's last is full, else one by one.
    /// Returns the payload bytes sent; errors only when a block lies
    /// outside what the reader loaded.
    async fn send_window(&mut self, reader: &WindowReader, window: &[Transmit]) -> io::Result<u64> {
        let segment = usize::from(self.block_size) + DATA_HEADER_LEN;
        let per_send = (bellows_udp::MAX_SEGMENTED_BYTES / segment).min(bellows_udp::MAX_SEGMENTS);
        let mut sent = 0;
        let mut rest = window;
        while !rest.is_empty() {
            let (chunk, after) = rest.split_at(per_send.max(1).min(rest.len()));
            rest = after;
            let segmented = chunk.len() > 1
                && self.segmentation
                && chunk[..chunk.len() - 1].iter().all(
                    |transmit| matches!(transmit, Transmit::Data { len, .. } if *len == usize::from(self.block_size)),
                );
            if segmented {
                // None: segmentation unavailable, block by block below.
                if let Some(bytes) = self.send_segmented(reader, chunk).await? {
                    sent += bytes;
                    continue;
                }
            }
            for transmit in chunk {
                let Transmit::Data { block, offset, len } = transmit else {
                    continue;
                };
                let data = reader
                    .slice(*offset, *len)
                    .ok_or_else(|| io::Error::other("block outside the loaded window"))?;
                self.packet.clear();
                self.packet.extend_from_slice(&data_header(*block));
                self.packet.extend_from_slice(data);
                match self.socket.send_to(&self.packet, self.peer).await {
                    Ok(_) => sent += *len as u64,
                    Err(e) => debug!(peer = %self.peer, error = %e, "TFTP send failed"),
                }
            }
        }
        Ok(sent)
    }

    /// One segmented send of `chunk` (at most `MAX_SEGMENTS` DATA):
    /// `Some(bytes)` when sent or lost like any datagram, `None` when the
    /// kernel cannot segment (then not tried again in this transfer).
    async fn send_segmented(
        &mut self,
        reader: &WindowReader,
        chunk: &[Transmit],
    ) -> io::Result<Option<u64>> {
        let mut headers = [[0u8; DATA_HEADER_LEN]; bellows_udp::MAX_SEGMENTS];
        let mut payloads: [&[u8]; bellows_udp::MAX_SEGMENTS] = [&[]; bellows_udp::MAX_SEGMENTS];
        let mut payload_bytes = 0;
        for (index, transmit) in chunk.iter().enumerate() {
            let Transmit::Data { block, offset, len } = transmit else {
                continue;
            };
            headers[index] = data_header(*block);
            payloads[index] = reader
                .slice(*offset, *len)
                .ok_or_else(|| io::Error::other("block outside the loaded window"))?;
            payload_bytes += *len as u64;
        }
        let mut parts = [IoSlice::new(&[]); 2 * bellows_udp::MAX_SEGMENTS];
        for (index, (header, payload)) in headers.iter().zip(payloads).take(chunk.len()).enumerate()
        {
            parts[2 * index] = IoSlice::new(header);
            parts[2 * index + 1] = IoSlice::new(payload);
        }
        let parts = &parts[..2 * chunk.len()];
        let segment = self.block_size + DATA_HEADER_LEN as u16;
        match bellows_udp::send_segmented(self.socket, parts, segment, self.peer).await {
            Ok(_) => Ok(Some(payload_bytes)),
            Err(e) if bellows_udp::segmentation_unsupported(&e) => {
                debug!(peer = %self.peer, error = %e, "no UDP segmentation: blocks go out one by one");
                self.segmentation = false;
                Ok(None)
            }
            Err(e) => {
                debug!(peer = %self.peer, error = %e, "TFTP send failed");
                Ok(Some(0))
            }
        }
    }
}

/// A bounded read-ahead buffer over a file: holds at least the current
/// window, reads in the blocking pool, rereads for retransmissions that fall
/// outside it.
pub(super) struct WindowReader {
    content: Arc<dyn FileContent>,
    start: u64,
    buffer: Vec<u8>,
}

impl WindowReader {
    pub(super) fn new(content: Arc<dyn FileContent>) -> Self {
        Self {
            content,
            start: 0,
            buffer: Vec::new(),
        }
    }

    /// Makes `start..end` available to [`slice`](Self::slice).
    async fn load(&mut self, start: u64, end: u64) -> io::Result<()> {
        if self.content.in_memory().is_some() {
            return Ok(());
        }
        let loaded_end = self.start + self.buffer.len() as u64;
        if start >= self.start && end <= loaded_end {
            return Ok(());
        }
        let size = self.content.size();
        let read_end = end.max(start.saturating_add(READ_AHEAD as u64).min(size));
        let len = usize::try_from(read_end - start)
            .map_err(|_| io::Error::other("window larger than memory"))?;
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.resize(len, 0);
        let content = Arc::clone(&self.content);
        let (mut buffer, read) = tokio::task::spawn_blocking(move || {
            let read = content.read_at(start, &mut buffer);
            (buffer, read)
        })
        .await
        .map_err(io::Error::other)?;
        let got = read?;
        if (got as u64) < end - start {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while being served",
            ));
        }
        buffer.truncate(got);
        self.buffer = buffer;
        self.start = start;
        Ok(())
    }

    fn slice(&self, offset: u64, len: usize) -> Option<&[u8]> {
        if let Some(all) = self.content.in_memory() {
            let from = usize::try_from(offset).ok()?;
            return all.get(from..from.checked_add(len)?);
        }
        let from = usize::try_from(offset.checked_sub(self.start)?).ok()?;
        self.buffer.get(from..from.checked_add(len)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Contents read through `read_at` only, as a file on disk is.
    struct NotInMemory(Vec<u8>);

    impl FileContent for NotInMemory {
        fn size(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read_at(offset, buf)
        }
    }

    #[tokio::test]
    async fn window_reader_reads_ahead_and_rereads() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut reader = WindowReader::new(Arc::new(NotInMemory(data.clone())));
        reader.load(0, 512).await.unwrap();
        assert_eq!(reader.slice(0, 512).unwrap(), &data[..512]);
        assert_eq!(reader.slice(60_000, 100).unwrap(), &data[60_000..60_100]);
        reader.load(100_000, 100_512).await.unwrap();
        assert_eq!(reader.slice(100_000, 512).unwrap(), &data[100_000..100_512]);
        assert!(reader.slice(0, 1).is_none());
        reader.load(190_000, 200_000).await.unwrap();
        assert_eq!(reader.slice(199_990, 10).unwrap(), &data[199_990..]);
        assert!(reader.load(199_000, 200_001).await.is_err());
    }

    #[tokio::test]
    async fn in_memory_contents_are_sliced_without_a_copy() {
        let data: Arc<[u8]> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let mut reader = WindowReader::new(Arc::new(Arc::clone(&data)));
        reader.load(1000, 1512).await.unwrap();
        assert_eq!(reader.slice(1000, 512).unwrap(), &data[1000..1512]);
        assert!(
            reader.buffer.is_empty(),
            "no read buffer for in-memory files"
        );
        assert!(reader.slice(4900, 512).is_none());
    }

    #[test]
    fn only_what_answers_the_client_waits_for_its_reply() {
        let peer: SocketAddr = "10.0.0.5:2070".parse().unwrap();
        let stranger: SocketAddr = "10.0.0.9:4000".parse().unwrap();
        let data = Transmit::Data {
            block: 2,
            offset: 512,
            len: 512,
        };
        let to = |to| Transmit::Packet {
            to,
            bytes: error_packet(ErrorCode::UnknownTransferId, "Unknown transfer ID"),
        };
        assert!(answers_the_client(std::slice::from_ref(&data), peer));
        assert!(answers_the_client(&[to(peer)], peer));
        assert!(
            !answers_the_client(&[], peer),
            "nothing sent: nothing to wait for"
        );
        assert!(
            !answers_the_client(&[to(stranger)], peer),
            "a stray sender's answer"
        );
        assert!(!answers_the_client(&[data, to(stranger)], peer));
    }
}
