//! Multi-process data parallelism without a GPU library: a TCP rendezvous and a star all-reduce.
//!
//! Rendezvous (torchrun's env convention): rank 0 listens on MASTER_ADDR:MASTER_PORT, every other
//! rank connects and introduces itself (rank, world size). All-reduce: each rank sends its f32
//! gradients to rank 0, which checks that every rank sent the same tensor shapes, sums in rank order
//! (0, 1, …, N−1), divides by N and sends the one result back, so all ranks apply bit-identical
//! means. Star, not ring: simple and deterministic; rank 0 moves N× the gradient bytes per step.
//!
//! Failures are errors on every rank, never hangs: a rank that exits closes its socket (rank 0
//! then reports it to the others), a rank that stalls runs into the read timeout, and a rank whose
//! tensors disagree with rank 0's makes rank 0 send an error instead of the mean.

use crate::allreduce::AllReduce;
use candle_core::{DType, Result, Tensor};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MAGIC: u32 = 0x4741_5231; // "GAR1"
const OK: u8 = 0;
const FAILED: u8 = 1;

fn msg(text: String) -> candle_core::Error {
    candle_core::Error::Msg(text)
}

/// Rank 0's listening socket before the others have joined (split from `accept` so tests can
/// bind port 0 and learn the port).
pub struct Listener {
    listener: TcpListener,
    world: usize,
    timeout: Duration,
}

impl Listener {
    pub fn bind(addr: &str, port: u16, world: usize, timeout: Duration) -> Result<Self> {
        let listener = TcpListener::bind((addr, port))
            .map_err(|e| msg(format!("rank 0 cannot listen on {addr}:{port}: {e}")))?;
        Ok(Self {
            listener,
            world,
            timeout,
        })
    }

    pub fn port(&self) -> Result<u16> {
        Ok(self.listener.local_addr()?.port())
    }

    /// Wait until ranks 1..N have connected (each exactly once, all with the same world size).
    pub fn accept(self) -> Result<TcpGroup> {
        let deadline = Instant::now() + self.timeout;
        self.listener.set_nonblocking(true)?;
        let mut peers: Vec<Option<TcpStream>> = (1..self.world).map(|_| None).collect();
        while peers.iter().any(Option::is_none) {
            match self.listener.accept() {
                Ok((mut stream, from)) => {
                    stream.set_nonblocking(false)?;
                    configure(&stream, self.timeout)?;
                    let (rank, world) = read_hello(&mut stream)
                        .map_err(|e| msg(format!("rendezvous: bad greeting from {from}: {e}")))?;
                    let problem = if world != self.world {
                        Some(format!(
                            "rank {rank} has WORLD_SIZE={world}, rank 0 has {}",
                            self.world
                        ))
                    } else if rank == 0 || rank >= self.world {
                        Some(format!(
                            "rank {rank} is out of range for world size {world}"
                        ))
                    } else if peers[rank - 1].is_some() {
                        Some(format!("two processes claim rank {rank}"))
                    } else {
                        None
                    };
                    if let Some(p) = problem {
                        let _ = send_status(&mut stream, Err(&p));
                        candle_core::bail!("rendezvous: {p}");
                    }
                    send_status(&mut stream, Ok(()))?;
                    peers[rank - 1] = Some(stream);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        let missing: Vec<String> = (1..self.world)
                            .filter(|r| peers[r - 1].is_none())
                            .map(|r| r.to_string())
                            .collect();
                        candle_core::bail!(
                            "rendezvous timed out after {:?}: rank(s) {} did not connect",
                            self.timeout,
                            missing.join(", ")
                        );
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(TcpGroup {
            rank: 0,
            world: self.world,
            links: Mutex::new(peers.into_iter().map(|p| p.expect("all joined")).collect()),
        })
    }
}

/// One rank of a multi-process group. Rank 0 holds a link to every other rank; the others hold
/// their one link to rank 0.
pub struct TcpGroup {
    rank: usize,
    world: usize,
    links: Mutex<Vec<TcpStream>>,
}

impl TcpGroup {
    /// Join as rank `rank` > 0: connect to rank 0 at `addr:port`, retrying until `timeout` (rank 0
    /// may start later).
    pub fn connect(
        addr: &str,
        port: u16,
        rank: usize,
        world: usize,
        timeout: Duration,
    ) -> Result<Self> {
        if rank == 0 || rank >= world {
            candle_core::bail!("rank {rank} cannot connect in a world of {world}");
        }
        let deadline = Instant::now() + timeout;
        let target = (addr, port)
            .to_socket_addrs()
            .map_err(|e| msg(format!("MASTER_ADDR {addr}:{port}: {e}")))?
            .next()
            .ok_or_else(|| msg(format!("MASTER_ADDR {addr}:{port} resolves to nothing")))?;
        let mut stream = loop {
            match TcpStream::connect_timeout(&target, Duration::from_secs(5)) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => {
                    candle_core::bail!("rank {rank}: no rank 0 at {target} after {timeout:?} ({e})")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        configure(&stream, timeout)?;
        let mut hello = Vec::with_capacity(12);
        hello.extend(MAGIC.to_le_bytes());
        hello.extend((rank as u32).to_le_bytes());
        hello.extend((world as u32).to_le_bytes());
        stream.write_all(&hello)?;
        read_status(&mut stream).map_err(|e| msg(format!("rendezvous: {e}")))?;
        Ok(Self {
            rank,
            world,
            links: Mutex::new(vec![stream]),
        })
    }

    /// Rank 0's `data` on every rank (the others' argument is ignored); used for the NCCL id.
    pub fn broadcast(&self, data: &[u8]) -> Result<Vec<u8>> {
        let mut links = self.links.lock().expect("tcp group lock poisoned");
        if self.rank == 0 {
            for (i, link) in links.iter_mut().enumerate() {
                let mut m = (data.len() as u64).to_le_bytes().to_vec();
                m.extend(data);
                link.write_all(&m)
                    .map_err(|e| peer_error(i + 1, "sending to", e))?;
            }
            Ok(data.to_vec())
        } else {
            let link = &mut links[0];
            let len = read_u64(link).map_err(|e| peer_error(0, "receiving from", e))?;
            let mut out = vec![0u8; len as usize];
            link.read_exact(&mut out)
                .map_err(|e| peer_error(0, "receiving from", e))?;
            Ok(out)
        }
    }
}

fn configure(stream: &TcpStream, timeout: Duration) -> Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(())
}

fn read_u32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_hello(r: &mut impl Read) -> std::io::Result<(usize, usize)> {
    if read_u32(r)? != MAGIC {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            "not a gar train process",
        ));
    }
    Ok((read_u32(r)? as usize, read_u32(r)? as usize))
}

fn send_status(w: &mut impl Write, status: std::result::Result<(), &str>) -> std::io::Result<()> {
    match status {
        Ok(()) => w.write_all(&[OK]),
        Err(text) => {
            let mut m = vec![FAILED];
            m.extend((text.len() as u32).to_le_bytes());
            m.extend(text.as_bytes());
            w.write_all(&m)
        }
    }
}

/// `Err(rank 0's message)` when rank 0 reported a failure.
fn read_status(r: &mut impl Read) -> Result<()> {
    let mut s = [0u8; 1];
    r.read_exact(&mut s)
        .map_err(|e| peer_error(0, "receiving from", e))?;
    if s[0] == OK {
        return Ok(());
    }
    let len = read_u32(r).map_err(|e| peer_error(0, "receiving from", e))?;
    let mut text = vec![0u8; len as usize];
    r.read_exact(&mut text)
        .map_err(|e| peer_error(0, "receiving from", e))?;
    candle_core::bail!("rank 0 reports: {}", String::from_utf8_lossy(&text))
}

/// A socket error in words: which rank, and whether it exited or stalled.
fn peer_error(rank: usize, doing: &str, e: std::io::Error) -> candle_core::Error {
    let why = match e.kind() {
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => {
            "the connection closed (did that process exit?)".to_string()
        }
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            "timed out (GAR_DIST_TIMEOUT; is that process stuck or much slower?)".to_string()
        }
        _ => e.to_string(),
    };
    msg(format!("all-reduce: {doing} rank {rank}: {why}"))
}

/// One rank's contribution: the tensor shapes and all values, flattened in order.
struct Contribution {
    shapes: Vec<Vec<usize>>,
    values: Vec<f32>,
}

impl Contribution {
    fn of(grads: &[Tensor]) -> Result<Self> {
        let mut values = Vec::new();
        for g in grads {
            values.extend(g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(Self {
            shapes: grads.iter().map(|g| g.dims().to_vec()).collect(),
            values,
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(16 + self.values.len() * 4);
        m.extend((self.shapes.len() as u32).to_le_bytes());
        for s in &self.shapes {
            m.extend((s.len() as u32).to_le_bytes());
            for &d in s {
                m.extend((d as u64).to_le_bytes());
            }
        }
        m.extend((self.values.len() as u64).to_le_bytes());
        for v in &self.values {
            m.extend(v.to_le_bytes());
        }
        m
    }

    fn decode(r: &mut impl Read) -> std::io::Result<Self> {
        let bad = |what: &str| std::io::Error::new(ErrorKind::InvalidData, what.to_string());
        let n = read_u32(r)? as usize;
        if n > 1 << 24 {
            return Err(bad("implausible tensor count"));
        }
        let mut shapes = Vec::with_capacity(n);
        for _ in 0..n {
            let dims = read_u32(r)? as usize;
            if dims > 16 {
                return Err(bad("implausible tensor rank"));
            }
            shapes.push(
                (0..dims)
                    .map(|_| read_u64(r).map(|d| d as usize))
                    .collect::<std::io::Result<Vec<_>>>()?,
            );
        }
        let count = read_u64(r)? as usize;
        if count
            != shapes
                .iter()
                .map(|s| s.iter().product::<usize>())
                .sum::<usize>()
        {
            return Err(bad("value count does not match the shapes"));
        }
        let mut bytes = vec![0u8; count * 4];
        r.read_exact(&mut bytes)?;
        let values = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Self { shapes, values })
    }
}

fn read_values(r: &mut impl Read, count: usize) -> std::io::Result<Vec<f32>> {
    let mut bytes = vec![0u8; count * 4];
    r.read_exact(&mut bytes)?;
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn describe(shapes: &[Vec<usize>]) -> String {
    if shapes.len() > 4 {
        return format!("{} tensors", shapes.len());
    }
    format!("{} tensors {shapes:?}", shapes.len())
}

impl TcpGroup {
    /// Rank 0: gather, check, sum in rank order, divide, send back.
    fn reduce_at_root(&self, links: &mut [TcpStream], mine: Contribution) -> Result<Vec<f32>> {
        let mut sum = mine.values.clone();
        let mut failure = None;
        for (i, link) in links.iter_mut().enumerate() {
            let rank = i + 1;
            match Contribution::decode(link) {
                Err(e) => {
                    failure = Some(peer_error(rank, "receiving gradients from", e).to_string());
                    break;
                }
                Ok(c) if c.shapes != mine.shapes => {
                    failure = Some(format!(
                        "rank {rank} sent {}, rank 0 has {}",
                        describe(&c.shapes),
                        describe(&mine.shapes)
                    ));
                    break;
                }
                Ok(c) => {
                    for (s, v) in sum.iter_mut().zip(&c.values) {
                        *s += v;
                    }
                }
            }
        }
        if let Some(text) = failure {
            // Best effort: tell every rank still listening, then fail here too.
            for link in links.iter_mut() {
                let _ = send_status(link, Err(&text));
            }
            candle_core::bail!("all-reduce: {text}");
        }
        let world = self.world as f32;
        let mean: Vec<f32> = sum.iter().map(|s| s / world).collect();
        let mut reply = vec![OK];
        for v in &mean {
            reply.extend(v.to_le_bytes());
        }
        for (i, link) in links.iter_mut().enumerate() {
            link.write_all(&reply)
                .map_err(|e| peer_error(i + 1, "sending the mean to", e))?;
        }
        Ok(mean)
    }
}

impl AllReduce for TcpGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world
    }
    fn all_reduce_mean(&self, grads: &mut [Tensor]) -> Result<()> {
        let mine = Contribution::of(grads)?;
        let count = mine.values.len();
        let mut links = self.links.lock().expect("tcp group lock poisoned");
        let mean = if self.rank == 0 {
            self.reduce_at_root(&mut links, mine)?
        } else {
            let link = &mut links[0];
            link.write_all(&mine.encode())
                .map_err(|e| peer_error(0, "sending gradients to", e))?;
            read_status(link)?;
            read_values(link, count).map_err(|e| peer_error(0, "receiving the mean from", e))?
        };
        let mut offset = 0;
        for g in grads.iter_mut() {
            let n = g.elem_count();
            *g = Tensor::from_slice(&mean[offset..offset + n], g.dims(), g.device())?;
            offset += n;
        }
        Ok(())
    }
}
