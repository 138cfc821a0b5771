//! A framework for tests, written against the scheduler API over gRPC: subscribe, then read events
//! and make calls.

use std::time::Duration;

use skiff_cli::client::Channel;
use skiff_proto as pb;
use skiff_proto::scheduler_call::Call;
use skiff_proto::scheduler_event::Event;

pub struct TestFramework {
    pub id: String,
    pub epoch: u64,
    client: pb::scheduler_service_client::SchedulerServiceClient<Channel>,
    events: tonic::Streaming<pb::SchedulerEvent>,
}

impl TestFramework {
    pub async fn subscribe(addr: &str, name: &str, role: &str) -> TestFramework {
        let info = pb::FrameworkInfo { name: name.into(), role: role.into(), ..Default::default() };
        Self::subscribe_with(addr, info).await
    }

    pub async fn subscribe_with(addr: &str, info: pb::FrameworkInfo) -> TestFramework {
        let channel = super::pki::channel(addr).await.expect("dial the coordinator");
        let mut client = pb::scheduler_service_client::SchedulerServiceClient::new(channel);
        let mut events =
            client.subscribe(pb::SubscribeRequest { framework: Some(info) }).await.expect("subscribe").into_inner();
        let first = events.message().await.expect("event stream").expect("a first event");
        let Some(Event::Subscribed(subscribed)) = first.event else {
            panic!("first event is not subscribed: {first:?}")
        };
        let id = subscribed.framework.expect("framework info").framework_id;
        assert!(!id.is_empty(), "the leader assigns an id");
        TestFramework { id, epoch: first.epoch, client, events }
    }

    /// The next event other than a heartbeat, within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.message()).await {
                Err(_) => return None,
                Ok(Ok(Some(pb::SchedulerEvent { event: Some(Event::Heartbeat(_)), .. }))) => continue,
                Ok(Ok(Some(event))) => return event.event,
                Ok(other) => panic!("event stream ended: {other:?}"),
            }
        }
    }

    pub async fn call(&mut self, call: Call) -> Result<Vec<String>, tonic::Status> {
        let request = pb::SchedulerCall { framework_id: self.id.clone(), epoch: self.epoch, call: Some(call) };
        self.client.call(request).await.map(|r| r.into_inner().task_ids)
    }

    pub async fn accept(&mut self, offer_id: &str, launches: Vec<pb::TaskSpec>) -> Result<Vec<String>, tonic::Status> {
        let accept = pb::scheduler_call::Accept { offer_ids: vec![offer_id.into()], launches, refuse_seconds: 0.0 };
        self.call(Call::Accept(accept)).await
    }

    pub async fn decline(&mut self, offer_id: &str, refuse_seconds: f64) {
        let decline =
            pb::scheduler_call::Decline { offer_ids: vec![offer_id.into()], refuse_seconds: Some(refuse_seconds) };
        self.call(Call::Decline(decline)).await.expect("decline");
    }

    pub async fn acknowledge(&mut self, status: &pb::TaskStatus) {
        if status.update_id.is_empty() {
            return;
        }
        let ack =
            pb::scheduler_call::Acknowledge { task_id: status.task_id.clone(), update_id: status.update_id.clone() };
        self.call(Call::Acknowledge(ack)).await.expect("acknowledge");
    }
}

/// A native task: `sleep SECONDS` with <cpus, 64 MiB>.
pub fn sleep_task(seconds: u32, cpus: f64) -> pb::TaskSpec {
    pb::TaskSpec {
        name: "sleep".into(),
        resources: Some(pb::Resources { cpus, mem_bytes: 64 << 20, ..Default::default() }),
        args: vec![seconds.to_string()],
        kind: Some(pb::task_spec::Kind::Native(pb::NativeTask { command: "/bin/sleep".into(), ..Default::default() })),
        ..Default::default()
    }
}

/// Whether an offer holds at least <cpus, mem>.
pub fn fits(offer: &pb::Offer, cpus: f64, mem_bytes: u64) -> bool {
    let r = offer.resources.unwrap_or_default();
    r.cpus + 1e-9 >= cpus && r.mem_bytes >= mem_bytes
}
