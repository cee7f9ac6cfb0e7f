//! `ferry user`: the users of a server's store.

use anyhow::Result;
use ferry_store::Store;

use crate::cli::UserCommand;

pub async fn run(command: UserCommand) -> Result<()> {
    match command {
        UserCommand::Add { name, server } => {
            let (_, store) = server.open_store().await?;
            let user = store.add_user(&name).await?;
            eprintln!("created user '{}'", user.name);
            println!("{}", user.id);
            Ok(())
        }
    }
}
