//! `ferry token`: devices and their bearer tokens (create, revoke).

use anyhow::Result;
use ferry_store::Store;

use crate::cli::TokenCommand;

pub async fn run(command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Create { user, device, admin, role, server } => {
            let (_, store) = server.open_store().await?;
            let t = store.create_device(&user, &device, admin, role.as_deref()).await?;
            eprintln!("created device '{device}' ({}) for user '{user}'; the token is shown only once:", t.device_id);
            println!("{}", t.token);
            Ok(())
        }
        TokenCommand::Revoke { user, device, json, server } => {
            let (_, store) = server.open_store().await?;
            let ids = store.revoke_devices(Some(&user), &device).await?;
            if json {
                println!("{}", serde_json::json!({ "revoked": ids }));
            } else {
                eprintln!("revoked {} device(s) named '{device}' of user '{user}':", ids.len());
                for id in ids {
                    println!("{id}");
                }
            }
            Ok(())
        }
    }
}
