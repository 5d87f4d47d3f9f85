//! `todo.notifications.v1.NotificationService`: the caller's delivered notifications, paged.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use todo_proto::todo::notifications::v1::{
    ListNotificationsRequest, ListNotificationsResponse, Notification as ApiNotification,
    notification_service_server::NotificationService,
};
use tonic::Status;

use crate::{
    delivery_log::{DeliveryLog, LogError, newest_first},
    notification::Notification,
};

/// `page_size` when the request leaves it at 0.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// The largest page served.
pub const MAX_PAGE_SIZE: usize = 500;

/// The one mapping of delivery log errors to gRPC statuses.
impl From<LogError> for Status {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Store(_) | LogError::Contended { .. } | LogError::Batch(_) => {
                Status::unavailable(format!("the notification store is unavailable: {e}"))
            }
            LogError::Corrupt { .. } => {
                tracing::error!(error = %e, "unreadable notification list");
                Status::internal("the notification list cannot be read")
            }
        }
    }
}

/// Where the previous page ended: the last notification returned (keyset paging, so a page
/// is stable while new notifications arrive at the top).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageToken {
    /// `delivered_at` of the last notification returned.
    pub d: DateTime<Utc>,
    /// Its reminder id (the tie-breaker).
    pub r: String,
}

impl PageToken {
    pub fn encode(&self) -> String {
        // A struct of a string and an instant: serialising cannot fail.
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(s: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(s).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn of(n: &Notification) -> Self {
        Self {
            d: n.delivered_at,
            r: n.reminder_id.clone(),
        }
    }
}

/// One page of `all` (sorted newest first) after `after`, and the token of the next page.
pub fn page(
    all: &[Notification],
    after: Option<&PageToken>,
    size: usize,
) -> (Vec<ApiNotification>, String) {
    let start = match after {
        None => 0,
        // The first entry ordered after the token's position.
        Some(t) => all.partition_point(|n| {
            let probe = Notification {
                delivered_at: t.d,
                reminder_id: t.r.clone(),
                ..n.clone()
            };
            newest_first(n, &probe).is_le()
        }),
    };
    let rest = &all[start.min(all.len())..];
    let items = &rest[..size.min(rest.len())];
    let next = match items.last() {
        Some(last) if rest.len() > items.len() => PageToken::of(last).encode(),
        _ => String::new(),
    };
    (items.iter().map(ApiNotification::from).collect(), next)
}

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct NotificationApi {
    log: DeliveryLog,
}

todo_auth::caller_rpcs!(NotificationService for NotificationApi {
    list_notifications(ListNotificationsRequest) -> ListNotificationsResponse;
});

impl NotificationApi {
    pub fn new(log: DeliveryLog) -> Self {
        Self { log }
    }

    /// ListNotifications for the caller `user` (see [`todo_auth::caller_rpcs!`]).
    async fn list_notifications(
        &self,
        user: String,
        req: ListNotificationsRequest,
    ) -> Result<ListNotificationsResponse, Status> {
        let size = match usize::try_from(req.page_size) {
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(n) => n.min(MAX_PAGE_SIZE),
            Err(_) => {
                return Err(Status::invalid_argument("page_size: must not be negative"));
            }
        };
        let after = match req.page_token.trim() {
            "" => None,
            t => Some(PageToken::decode(t).ok_or_else(|| {
                Status::invalid_argument(
                    "page_token: not a token this service issued (pass next_page_token as given)",
                )
            })?),
        };
        let all = self.log.list(&user, Utc::now()).await?;
        let (notifications, next_page_token) = page(&all, after.as_ref(), size);
        Ok(ListNotificationsResponse {
            notifications,
            next_page_token,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn n(reminder_id: &str, second: u32) -> Notification {
        let t = DateTime::from_timestamp(1_900_000_000 + i64::from(second), 0).unwrap();
        Notification::delivered_at(reminder_id, t)
    }

    fn ids(page: &[ApiNotification]) -> Vec<&str> {
        page.iter().map(|n| n.reminder_id.as_str()).collect()
    }

    /// Newest first: e(5) d(4) c(3) b(3) a(1) — b and c share an instant.
    fn all() -> Vec<Notification> {
        let mut v = vec![n("a", 1), n("b", 3), n("c", 3), n("d", 4), n("e", 5)];
        v.sort_by(newest_first);
        v
    }

    #[test]
    fn pages_walk_the_list_once_in_order() {
        let all = all();
        let (p1, t1) = page(&all, None, 2);
        assert_eq!(ids(&p1), ["e", "d"]);
        let (p2, t2) = page(&all, Some(&PageToken::decode(&t1).unwrap()), 2);
        assert_eq!(ids(&p2), ["c", "b"], "the tie is split across nothing");
        let (p3, t3) = page(&all, Some(&PageToken::decode(&t2).unwrap()), 2);
        assert_eq!(ids(&p3), ["a"]);
        assert_eq!(t3, "", "no more pages");

        let (whole, t) = page(&all, None, 5);
        assert_eq!(whole.len(), 5);
        assert_eq!(t, "", "an exact fit has no next page");
        assert_eq!(page(&[], None, 5), (vec![], String::new()));
    }

    #[test]
    fn a_page_is_stable_when_newer_notifications_arrive() {
        let mut all = all();
        let (_, t1) = page(&all, None, 2);
        all.insert(0, n("z", 9));
        let (p2, _) = page(&all, Some(&PageToken::decode(&t1).unwrap()), 2);
        assert_eq!(ids(&p2), ["c", "b"]);
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let t = PageToken::of(&n("r|:%", 7));
        assert_eq!(PageToken::decode(&t.encode()), Some(t));
        assert_eq!(PageToken::decode("!!"), None);
        assert_eq!(PageToken::decode(&URL_SAFE_NO_PAD.encode("{}")), None);
    }
}
