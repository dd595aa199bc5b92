//! `gar serve`: the HTTP API and web demo of gar-server, on loopback unless told otherwise.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use gar_engine::EngineOptions;
use gar_models::GarQuirks;
use gar_server::{Limits, ServerConfig};

use super::common::{self, ModelArgs, ProcessArgs};
use crate::exit::{Failure, Kind};

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub process: ProcessArgs,
    /// SAM checkpoint (directory or cached hub id) for point / box / scribble prompts.
    #[arg(long, env = "GAR_SAM")]
    pub sam: Option<String>,
    /// Hub revision when --sam is a hub id.
    #[arg(long, default_value = "main")]
    pub sam_revision: String,
    /// Address to listen on. Anything but loopback exposes the model to the network.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0 picks a free one; the chosen address is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Generation requests that may wait behind the running one; more get HTTP 429.
    #[arg(long, default_value_t = 8)]
    pub queue_size: usize,
    /// Require `Authorization: Bearer KEY` on /v1/* and /metrics.
    #[arg(long, env = "GAR_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Largest request body, in MiB.
    #[arg(long, default_value_t = 32)]
    pub max_body_mib: usize,
    /// Seconds one generation may take, queue wait included.
    #[arg(long, default_value_t = 600)]
    pub request_timeout: u64,
    /// Largest max_new_tokens a request may ask for.
    #[arg(long, default_value_t = 4096)]
    pub max_new_tokens_limit: usize,
}

pub fn run(args: ServeArgs) -> Result<()> {
    common::configure_threads(&args.model);
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .or_else(|_| {
            use std::net::ToSocketAddrs;
            (args.host.as_str(), args.port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or(())
        })
        .map_err(|_| Failure::new(Kind::Input, anyhow!("cannot resolve --host {}", args.host)))?;
    if args.queue_size == 0 {
        return Err(Failure::new(Kind::Input, anyhow!("--queue-size must be ≥ 1")).into());
    }
    let api_key = args.api_key.clone().filter(|k| !k.is_empty());
    if !addr.ip().is_loopback() && api_key.is_none() {
        eprintln!("warning: listening on {addr} without --api-key: anyone who can reach it can use the model");
    }

    let model_dir = gar_engine::resolve_model(&args.model.model, &args.model.revision)
        .map_err(|e| Failure::new(Kind::Checkpoint, e))?;
    let sam_dir = match &args.sam {
        Some(sam) => Some(
            gar_sam::resolve_sam(sam, &args.sam_revision)
                .map_err(|e| Failure::new(Kind::Checkpoint, anyhow!("{e}")))?,
        ),
        None => None,
    };
    let config = ServerConfig {
        model_id: args.model.model.clone(),
        model_dir,
        engine: EngineOptions {
            dtype: args.model.dtype.into(),
            device: common::parse_device(&args.model.device)
                .map_err(|e| Failure::new(Kind::Input, e))?,
            quirks: GarQuirks {
                roi_double_scale: !args.process.fix_roi_scale,
            },
            processor: common::processor_options(&args.process),
            quant: common::parse_quant(&args.model.quant)
                .map_err(|e| Failure::new(Kind::Input, e))?,
            vision_int8: args.model.vision_int8,
            bf16_attention: args.model.bf16_attention,
        },
        sam_dir,
        limits: Limits {
            queue_size: args.queue_size,
            api_key,
            body_limit: args.max_body_mib << 20,
            request_timeout: Duration::from_secs(args.request_timeout),
            max_new_tokens: args.max_new_tokens_limit,
            load: gar_processor::LoadOptions {
                apply_exif_orientation: args.process.exif,
                ..Limits::default().load
            },
            ..Limits::default()
        },
    };
    let state =
        gar_server::build(config).map_err(|e| Failure::new(Kind::Checkpoint, anyhow!(e)))?;

    // The async side only parses and streams; the models have their own threads.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        // Scripts that pass --port 0 read the address from this line.
        println!("gar serve: listening on http://{local}");
        gar_server::serve(listener, state, shutdown_signal())
            .await
            .context("server failed")
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    eprintln!("gar serve: shutting down");
}
