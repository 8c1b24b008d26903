//! `mstctl message`: a dossier's thread in the messagerie — read it, post to it (with
//! attachments, streamed).

use clap::Subcommand;
use mst_kit::auth::Role;
use mst_proto::messagerie as pb;
use mst_proto::messagerie::messagerie_service_client::MessagerieServiceClient;

use crate::client::{Caller, channel, explain};

/// Bytes per message of a streamed attachment.
const CHUNK: usize = 256 * 1024;

/// Where the messagerie listens.
#[derive(Debug, Clone, clap::Args)]
pub struct MessagerieAddr {
    /// Address of the messagerie service.
    #[arg(
        long = "messagerie-url",
        env = "MST_MESSAGERIE_URL",
        default_value = "http://127.0.0.1:50053",
        global = true
    )]
    pub url: String,
}

#[derive(Debug, Subcommand)]
pub enum MessageCommand {
    /// The thread of a dossier: messages and automatic emails, oldest first.
    List {
        /// Dossier number.
        number: i64,
    },
    /// Post a message (as an instructeur unless --role says otherwise).
    Post {
        /// Dossier number.
        number: i64,
        /// Text of the message.
        #[arg(long)]
        body: String,
        /// A file to attach (repeat for several; 20 MB each by default).
        #[arg(long = "attach")]
        files: Vec<std::path::PathBuf>,
    },
}

fn content_type(path: &std::path::Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("pdf") => "application/pdf",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("txt") => "text/plain",
        Some("csv") => "text/csv",
        Some("odt") => "application/vnd.oasis.opendocument.text",
        Some("docx") => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        _ => "application/octet-stream",
    }
}

pub async fn run(
    command: MessageCommand,
    addr: &MessagerieAddr,
    caller: &Caller,
) -> anyhow::Result<bool> {
    let mut client = MessagerieServiceClient::new(channel(&addr.url).await?);
    let role = Role::Instructeur;
    match command {
        MessageCommand::List { number } => {
            let mut token = String::new();
            loop {
                let page = client
                    .list_messages(caller.request(
                        role,
                        pb::ListMessagesRequest {
                            number,
                            page_size: 200,
                            page_token: token.clone(),
                        },
                    )?)
                    .await
                    .map_err(|s| explain(&s))?
                    .into_inner();
                for e in &page.entries {
                    let at = e
                        .created_at
                        .as_ref()
                        .map(|t| t.to_string())
                        .unwrap_or_default();
                    match &e.content {
                        Some(pb::thread_entry::Content::Message(m)) => {
                            let author = m.author.as_ref().map(|a| a.email.as_str()).unwrap_or("?");
                            let files: Vec<&str> =
                                m.attachments.iter().map(|f| f.file_name.as_str()).collect();
                            println!("{at}  {author}: {}", m.body);
                            if !files.is_empty() {
                                println!("    pièces jointes : {}", files.join(", "));
                            }
                        }
                        Some(pb::thread_entry::Content::AutomaticEmail(a)) => {
                            println!("{at}  Email automatique : {}", a.subject);
                        }
                        Some(pb::thread_entry::Content::Tombstone(_)) => {
                            println!("{at}  (message supprimé)");
                        }
                        None => {}
                    }
                }
                if page.next_page_token.is_empty() {
                    if !page.writable {
                        println!("(messagerie en lecture seule)");
                    }
                    break;
                }
                token = page.next_page_token;
            }
            Ok(true)
        }
        MessageCommand::Post {
            number,
            body,
            files,
        } => {
            use pb::post_message_request::Payload;
            let mut messages = vec![pb::PostMessageRequest {
                payload: Some(Payload::Metadata(pb::PostMessageMetadata {
                    number,
                    body,
                    attachment_count: i32::try_from(files.len())?,
                    request_id: uuid::Uuid::new_v4().to_string(),
                })),
            }];
            for path in &files {
                let bytes = std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                messages.push(pb::PostMessageRequest {
                    payload: Some(Payload::Attachment(pb::AttachmentHeader {
                        file_name: path
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        content_type: content_type(path).to_owned(),
                        size_bytes: i64::try_from(bytes.len())?,
                    })),
                });
                messages.extend(bytes.chunks(CHUNK).map(|c| pb::PostMessageRequest {
                    payload: Some(Payload::Chunk(c.to_vec())),
                }));
            }
            let entry = client
                .post_message(caller.request(role, futures::stream::iter(messages))?)
                .await
                .map_err(|s| explain(&s))?
                .into_inner()
                .entry
                .unwrap_or_default();
            println!("message {} posté sur le dossier {number}", entry.id);
            Ok(true)
        }
    }
}
