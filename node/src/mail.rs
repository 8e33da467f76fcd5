//! The cluster as the protocol gateways see it: [`gateways::service::MailService`]
//! implemented on top of [`Service`] (routing to shard leaders, replicated writes).

use async_trait::async_trait;
use gateways::service::{Account, Delivery, MailService, Relay, ServiceError, Stored};

use crate::proto::state::OutboundItem;
use crate::service::{Service, verify_password};

#[async_trait]
impl MailService for Service {
    async fn is_local_domain(&self, domain: &str) -> Result<bool, ServiceError> {
        Service::is_local_domain(self, domain).await
    }

    async fn find_user(&self, address: &str) -> Result<Option<Account>, ServiceError> {
        match self.lookup_user(address).await {
            Ok(user) => Ok(Some(Account { user_id: user.id, email: user.email })),
            Err(ServiceError::NotFound(_) | ServiceError::Invalid(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn verify_login(&self, login: &str, password: &str) -> Result<Option<Account>, ServiceError> {
        let user = match self.lookup_user(login).await {
            Ok(user) => user,
            Err(ServiceError::NotFound(_) | ServiceError::Invalid(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        // Argon2 takes tens of milliseconds: off the async workers.
        let (password, hash) = (password.to_string(), user.password_hash.clone());
        let valid = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        Ok(valid.then_some(Account { user_id: user.id, email: user.email }))
    }

    async fn deliver(&self, delivery: Delivery) -> Result<Stored, ServiceError> {
        let (_, delivered) = Service::deliver(
            self,
            &delivery.user_id,
            &delivery.mailbox,
            delivery.raw,
            &delivery.kind,
            &delivery.client_ref,
            Some(&delivery.idempotency_key),
        )
        .await?;
        Ok(Stored { uid: delivered.uid, uid_validity: delivered.uid_validity, modseq: delivered.modseq })
    }

    async fn enqueue_relay(&self, relay: Relay) -> Result<(), ServiceError> {
        let item = OutboundItem {
            channel: "smtp".into(),
            target: relay.recipient,
            payload: relay.raw,
            content_type: "message/rfc822".into(),
            client_ref: relay.idempotency_key.clone(),
            mail_from: relay.mail_from,
            ..Default::default()
        };
        self.enqueue_outbound(&relay.user_id, item, Some(&relay.idempotency_key)).await.map(|_| ())
    }
}
