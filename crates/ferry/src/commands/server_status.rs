//! `ferry server-status`: a running server's file store and transfer queue, asked over HTTP
//! with an admin token.

use anyhow::{Context, Result};
use ferry_client::Remote;

use crate::cli::RemoteArgs;

pub async fn run(args: RemoteArgs) -> Result<()> {
    let remote = Remote::new(&args.server, &args.token)?;
    let status = remote.admin_status().await.with_context(|| format!("status of {}", args.server))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        let f = &status.files;
        println!("server        {}", args.server);
        println!("file store    {}", f.store);
        println!("stored        {} files, {} bytes", f.stored, f.stored_bytes);
        println!("referenced    {} files, {} not uploaded yet", f.referenced, f.missing);
        println!("uploading     {} files, {} bytes still to come", f.uploading, f.uploading_bytes_pending);
        println!("transfers     {} now, at most {} at once", f.in_flight, f.peak_in_flight);
        println!(
            "completed     {} uploads, {} downloads, {} uploads refused (hash mismatch)",
            f.uploads_completed, f.downloads_completed, f.uploads_refused
        );
        println!("upload limit  {} bytes", f.max_upload_bytes);
    }
    Ok(())
}
