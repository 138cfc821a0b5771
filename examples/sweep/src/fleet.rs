//! The calls outside the scheduler stream (finding the leader and storing the module use the
//! `skiff` CLI's client library): reading a finished task's stdout.

use skiff_cli::client::Channel;
use skiff_proto as pb;

/// What a task wrote to stdout, from the coordinator's record of it.
pub async fn read_stdout(leader: Channel, task_id: &str) -> Result<String, String> {
    let mut operator = pb::operator_service_client::OperatorServiceClient::new(leader);
    let request = pb::WatchTaskRequest { task_id: task_id.to_owned(), history_only: true, ..Default::default() };
    let watch = |s: tonic::Status| format!("WatchTask {task_id}: {}", s.message());
    let mut events = operator.watch_task(request).await.map_err(watch)?.into_inner();
    let mut stdout = Vec::new();
    while let Some(event) = events.message().await.map_err(watch)? {
        if let Some(pb::task_event::Event::Output(out)) = event.event
            && out.stream() == pb::OutputStream::Stdout
        {
            stdout.extend_from_slice(&out.data);
        }
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}
