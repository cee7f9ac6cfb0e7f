//! `ferry admin passwd`: the dashboard's admin password, kept in the store as a hash.

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, Result, bail};
use ferry_store::Store;

use crate::cli::AdminCommand;

pub async fn run(command: AdminCommand) -> Result<()> {
    match command {
        AdminCommand::Passwd { remove, server } => {
            let (_, store) = server.open_store().await?;
            if remove {
                store.set_admin_password(None).await?;
                eprintln!(
                    "admin password removed; sign in to /admin with an admin token (`ferry token create --admin`)"
                );
                return Ok(());
            }
            let hash = ferry_server::hash_password(&read_password()?).map_err(anyhow::Error::msg)?;
            store.set_admin_password(Some(&hash)).await?;
            eprintln!("admin password set; sign in to /admin with it (sessions the old one opened are signed out)");
            Ok(())
        }
    }
}

/// The new password: asked twice without echo on a terminal, else the first line of standard
/// input (for scripts: `printf '%s\n' "$PASSWORD" | ferry admin passwd`).
fn read_password() -> Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("New admin password: ").context("cannot read the password")?;
        let again = rpassword::prompt_password("The same again: ").context("cannot read the password")?;
        if first != again {
            bail!("the two passwords differ; nothing changed, run `ferry admin passwd` again");
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        bail!(
            "no password on standard input; pipe it in (printf '%s\\n' \"$PASSWORD\" | ferry admin passwd), or run it on a terminal"
        );
    }
    Ok(password.to_owned())
}
