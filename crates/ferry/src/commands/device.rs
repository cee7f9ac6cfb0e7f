//! `ferry device`: the devices of a server's store (list, revoke by id).

use anyhow::Result;
use ferry_protocol::{DevicesResponse, RevokeResponse};
use ferry_store::Store;

use crate::cli::DeviceCommand;

pub async fn run(command: DeviceCommand) -> Result<()> {
    match command {
        DeviceCommand::List { user, json, server } => {
            let (_, store) = server.open_store().await?;
            let devices = store.devices(user.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&DevicesResponse { devices })?);
                return Ok(());
            }
            if devices.is_empty() {
                println!("no devices");
            }
            for d in &devices {
                let mut traits = Vec::new();
                if d.admin {
                    traits.push("admin".to_owned());
                }
                if let Some(role) = &d.role {
                    traits.push(format!("role {role}"));
                }
                let traits = if traits.is_empty() { String::new() } else { format!(" ({})", traits.join(", ")) };
                let state = match &d.revoked_at {
                    Some(at) => format!("revoked {at}"),
                    None => "live".to_owned(),
                };
                println!(
                    "{}  {}/{}{traits}  created {}  last seen {}  {state}",
                    d.id,
                    d.user_name,
                    d.name,
                    d.created_at,
                    d.last_seen.as_deref().unwrap_or("never")
                );
            }
            Ok(())
        }
        DeviceCommand::Revoke { id, json, server } => {
            let (_, store) = server.open_store().await?;
            let revoked = store.revoke_devices(None, &id).await?;
            if json {
                println!("{}", serde_json::to_string(&RevokeResponse { revoked })?);
            } else {
                println!("revoked device {id}: its tokens no longer work, its streams close within seconds");
            }
            Ok(())
        }
    }
}
