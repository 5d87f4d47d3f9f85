//! Paged listings: opaque page tokens bound to their query, bounded page sizes and time
//! filters, the same in every service that lists.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tonic::Status;

#[cfg(feature = "db")]
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, ModelTrait, Order, QueryFilter,
    QueryOrder, QuerySelect, Select, sea_query::Expr,
};

/// Where the previous page ended, and the filters of the query it belongs to: serialised
/// as URL-safe base64 of JSON, opaque to the caller. A service's token is a struct of plain
/// fields that names its query with [`PageToken::query`].
pub trait PageToken: Serialize + DeserializeOwned {
    /// The filters of the query, which must not change between pages.
    fn query(&self) -> &str;

    /// The `next_page_token` to hand the caller.
    fn encode(&self) -> String {
        // Serialising a struct of plain fields cannot fail.
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// The token of a request (`None` for the first page), checked against its query:
    /// INVALID_ARGUMENT naming `page_token` when this service did not issue it or issued it
    /// for other filters.
    fn decode(s: &str, query: &str) -> Result<Option<Self>, Status> {
        if s.trim().is_empty() {
            return Ok(None);
        }
        let token: Option<Self> = URL_SAFE_NO_PAD
            .decode(s.trim())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        match token {
            Some(t) if t.query() == query => Ok(Some(t)),
            Some(_) => Err(Status::invalid_argument(
                "page_token: it belongs to a query with other filters",
            )),
            None => Err(Status::invalid_argument(
                "page_token: not a token this service issued (pass next_page_token as given)",
            )),
        }
    }
}

/// The token of a listing ordered by a time and an id: where the last row returned stands
/// in that order, and the query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct After {
    /// The last row's time (its sort key).
    pub at: i64,
    /// The last row's id (the tie-breaker).
    pub id: String,
    /// The filters of the query, which must not change between pages.
    pub q: String,
}

impl PageToken for After {
    fn query(&self) -> &str {
        &self.q
    }
}

/// A listing ordered by a time column, then an id column that breaks ties, both one way:
/// the order its pages are cut in, each page starting after the last row of the one
/// before (an [`After`] token), so that rows written meanwhile neither repeat nor vanish.
#[cfg(feature = "db")]
#[derive(Debug, Clone, Copy)]
pub struct Keyset<C> {
    at: C,
    id: C,
    newest_first: bool,
}

/// What a listing request asks for: how many rows, after which ([`PageToken::decode`]d
/// against `query`), and the query its next token is bound to.
#[cfg(feature = "db")]
#[derive(Debug, Clone)]
pub struct PageRequest {
    pub size: u64,
    pub token: Option<After>,
    pub query: String,
}

#[cfg(feature = "db")]
impl PageRequest {
    /// The request's page (`page_size`, `default` for 0, at most `max`) after its
    /// `page_token`, which must belong to `query`; INVALID_ARGUMENT naming the field.
    pub fn new(
        page_size: i32,
        page_token: &str,
        (default, max): (u64, u64),
        query: String,
    ) -> Result<Self, Status> {
        Ok(Self {
            size: self::page_size(page_size, default, max)?,
            token: After::decode(page_token, &query)?,
            query,
        })
    }
}

#[cfg(feature = "db")]
impl<C: ColumnTrait> Keyset<C> {
    /// Oldest first: by `at`, then `id`, ascending.
    pub fn oldest_first(at: C, id: C) -> Self {
        Self {
            at,
            id,
            newest_first: false,
        }
    }

    /// Newest first: by `at`, then `id`, descending.
    pub fn newest_first(at: C, id: C) -> Self {
        Self {
            at,
            id,
            newest_first: true,
        }
    }

    /// The rows that come after the row at `(at, id)` in this order, as one row-value
    /// comparison (see [`row_after`]): both columns are NOT NULL.
    pub fn after(&self, at: i64, id: &str) -> Condition {
        row_after(
            [(self.at, at.into()), (self.id, id.into())],
            self.newest_first,
        )
    }

    /// `select` in this order.
    pub fn sorted<E: EntityTrait>(&self, select: Select<E>) -> Select<E> {
        let order = || {
            if self.newest_first {
                Order::Desc
            } else {
                Order::Asc
            }
        };
        select.order_by(self.at, order()).order_by(self.id, order())
    }

    /// The select of [`Keyset::page`]: the rows matching `filter` after `token` in this
    /// order, one more than `size` (to tell whether another page follows).
    pub fn select(
        &self,
        filter: Condition,
        token: Option<&After>,
        size: u64,
    ) -> Select<C::EntityName>
    where
        C::EntityName: EntityTrait<Column = C>,
    {
        let mut select = <C::EntityName as EntityTrait>::find().filter(filter);
        if let Some(t) = token {
            select = select.filter(self.after(t.at, &t.id));
        }
        self.sorted(select).limit(size.saturating_add(1))
    }

    /// One page of the rows matching `filter`: those after the request's token in this
    /// order, at most its size, and the next page's token (empty after the last page), made
    /// from the last row's time and id. A database error is mapped as [`crate::db::status`]
    /// maps it, saying `what` failed.
    pub async fn page(
        &self,
        filter: Condition,
        request: PageRequest,
        db: &impl ConnectionTrait,
        what: &'static str,
    ) -> Result<(Vec<<C::EntityName as EntityTrait>::Model>, String), Status>
    where
        C::EntityName: EntityTrait<Column = C>,
    {
        let PageRequest { size, token, query } = request;
        let mut rows = self
            .select(filter, token.as_ref(), size)
            .all(db)
            .await
            .map_err(crate::db::status_of(what))?;
        let more = rows.len() as u64 > size;
        rows.truncate(usize::try_from(size).unwrap_or(usize::MAX));
        let next = match rows.last() {
            Some(last) if more => {
                let (at, id) = (value(last, self.at)?, value(last, self.id)?);
                After { at, id, q: query }.encode()
            }
            _ => String::new(),
        };
        Ok((rows, next))
    }
}

/// The rows that come after the row whose key is `key` (each column with its value) in an
/// order by those columns, all ascending or, when `descending`, all descending:
/// `(a, b) > (?, ?)` (`<` when descending). That is `a > ? OR (a = ? AND b > ?)`, but
/// SQLite (and PostgreSQL) seek an index on the key columns to it, where the `OR` form
/// walks every row before it. Only for keys of NOT NULL columns: a comparison with NULL is
/// NULL, which would leave such rows out of every later page.
#[cfg(feature = "db")]
pub fn row_after<C: ColumnTrait>(
    key: impl IntoIterator<Item = (C, sea_orm::Value)>,
    descending: bool,
) -> Condition {
    use sea_orm::sea_query::ExprTrait;
    let (columns, values): (Vec<Expr>, Vec<Expr>) = key
        .into_iter()
        .map(|(c, v)| (Expr::col(c.as_column_ref()), c.save_as(Expr::val(v))))
        .unzip();
    let (columns, values) = (Expr::tuple(columns), Expr::tuple(values));
    Condition::all().add(if descending {
        columns.lt(values)
    } else {
        columns.gt(values)
    })
}

/// A row's value in `column` as `T`; INTERNAL (a bug) when the column holds another type.
#[cfg(feature = "db")]
fn value<T: sea_orm::sea_query::ValueType, M: ModelTrait>(
    row: &M,
    column: <M::Entity as EntityTrait>::Column,
) -> Result<T, Status> {
    T::try_from(row.get(column)).map_err(|e| {
        crate::internal(
            &e,
            &format!(
                "paging: column {} is not a {}",
                sea_orm::IdenStatic::as_str(&column),
                T::type_name()
            ),
        )
    })
}

/// The page size a request asks for: `default` for 0, at most `max`; INVALID_ARGUMENT
/// naming `page_size` when negative.
pub fn page_size(n: i32, default: u64, max: u64) -> Result<u64, Status> {
    match u64::try_from(n) {
        Ok(0) => Ok(default),
        Ok(n) => Ok(n.min(max)),
        Err(_) => Err(Status::invalid_argument("page_size: must not be negative")),
    }
}

/// A time filter of a request in microseconds since the epoch (`None` when unset);
/// INVALID_ARGUMENT naming `field` when it is not a valid timestamp.
pub fn micros(field: &str, t: Option<&prost_types::Timestamp>) -> Result<Option<i64>, Status> {
    t.map(|t| {
        todo_proto::from_timestamp(t)
            .map(|d| d.timestamp_micros())
            .ok_or_else(|| Status::invalid_argument(format!("{field}: not a valid timestamp")))
    })
    .transpose()
}

/// The `since`/`until` filters of a request in microseconds, each [`micros`]; when both
/// are set, `until` must come after `since` (INVALID_ARGUMENT naming `until`).
pub fn time_range(
    since: Option<&prost_types::Timestamp>,
    until: Option<&prost_types::Timestamp>,
) -> Result<(Option<i64>, Option<i64>), Status> {
    let (since, until) = (micros("since", since)?, micros("until", until)?);
    match (since, until) {
        (Some(s), Some(u)) if u <= s => Err(Status::invalid_argument("until: must be after since")),
        range => Ok(range),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
    struct Token {
        last: i64,
        q: String,
    }

    impl PageToken for Token {
        fn query(&self) -> &str {
            &self.q
        }
    }

    #[test]
    fn tokens_belong_to_their_query() {
        let t = Token {
            last: 7,
            q: "q1".into(),
        };
        assert_eq!(Token::decode(&t.encode(), "q1").unwrap(), Some(t));
        let t = Token::decode(
            &Token {
                last: 7,
                q: "q1".into(),
            }
            .encode(),
            "q2",
        )
        .unwrap_err();
        assert!(t.message().starts_with("page_token:"), "{t:?}");
        assert!(Token::decode("garbage!", "q1").is_err());
        assert_eq!(Token::decode(" ", "q1").unwrap(), None);
    }

    #[test]
    fn after_tokens_round_trip() {
        let t = After {
            at: 5,
            id: "x".into(),
            q: "q".into(),
        };
        assert_eq!(After::decode(&t.encode(), "q").unwrap(), Some(t.clone()));
        assert!(After::decode(&t.encode(), "other").is_err());
    }

    /// What audit-service's and dead-letter-service's own tests checked of their pages.
    #[cfg(feature = "db")]
    #[test]
    fn page_requests_are_bounded_and_bound_to_their_query() {
        let bounds = (50, 500);
        let size = |n| PageRequest::new(n, "", bounds, String::new()).map(|p| p.size);
        assert_eq!(size(0).unwrap(), 50);
        assert_eq!(size(10_000).unwrap(), 500);
        assert!(size(-1).is_err());
        let token = After {
            at: 5,
            id: "e".into(),
            q: "task:x".into(),
        }
        .encode();
        let page = PageRequest::new(1, &token, bounds, "task:x".into()).unwrap();
        assert_eq!(page.token.map(|t| (t.at, t.id)), Some((5, "e".into())));
        let other = PageRequest::new(1, &token, bounds, "task:y".into()).unwrap_err();
        assert!(other.message().starts_with("page_token:"), "{other:?}");
    }

    #[test]
    fn page_sizes_are_bounded_and_never_negative() {
        assert_eq!(page_size(0, 50, 500).unwrap(), 50);
        assert_eq!(page_size(7, 50, 500).unwrap(), 7);
        assert_eq!(page_size(10_000, 50, 500).unwrap(), 500);
        assert!(
            page_size(-1, 50, 500)
                .unwrap_err()
                .message()
                .starts_with("page_size:")
        );
    }

    #[test]
    fn time_filters_name_their_field() {
        assert_eq!(micros("since", None).unwrap(), None);
        let t = prost_types::Timestamp {
            seconds: 1,
            nanos: 5_000,
        };
        assert_eq!(micros("since", Some(&t)).unwrap(), Some(1_000_005));
        let bad = prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        };
        assert!(
            micros("until", Some(&bad))
                .unwrap_err()
                .message()
                .starts_with("until:")
        );
        let later = prost_types::Timestamp {
            seconds: 2,
            nanos: 0,
        };
        assert_eq!(
            time_range(Some(&t), Some(&later)).unwrap(),
            (Some(1_000_005), Some(2_000_000))
        );
        assert!(
            time_range(Some(&later), Some(&t))
                .unwrap_err()
                .message()
                .starts_with("until:")
        );
        assert!(
            time_range(Some(&bad), None)
                .unwrap_err()
                .message()
                .starts_with("since:")
        );
    }
}

#[cfg(all(test, feature = "db"))]
mod keyset_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sea_orm::{ActiveValue::Set, ConnectionTrait, Database, Schema, entity::prelude::*};

    mod row {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "rows")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: String,
            pub at: i64,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// Every row once, in order, whatever the page size, with ties on the time.
    #[tokio::test]
    async fn pages_cover_every_row_once_in_order() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        let schema = Schema::new(db.get_database_backend());
        db.execute(&schema.create_table_from_entity(row::Entity))
            .await
            .unwrap();
        // Two ties on the time, broken by the id.
        let mut oldest: Vec<(i64, String)> =
            [(3, "a3"), (1, "b1"), (2, "c2"), (1, "a1"), (3, "b3")]
                .map(|(at, id)| (at, id.to_owned()))
                .into();
        for (at, id) in &oldest {
            row::ActiveModel {
                id: Set(id.clone()),
                at: Set(*at),
            }
            .insert(&db)
            .await
            .unwrap();
        }
        oldest.sort();
        let mut newest = oldest.clone();
        newest.reverse();
        for (order, want) in [
            (
                Keyset::oldest_first(row::Column::At, row::Column::Id),
                oldest,
            ),
            (
                Keyset::newest_first(row::Column::At, row::Column::Id),
                newest,
            ),
        ] {
            for size in 1..=6 {
                let (mut seen, mut token) = (Vec::new(), String::new());
                loop {
                    let request =
                        PageRequest::new(size, &token, (50, 500), "q".to_owned()).unwrap();
                    let (page, next) = order
                        .page(Condition::all(), request, &db, "listing")
                        .await
                        .unwrap();
                    assert!(page.len() <= size as usize);
                    seen.extend(page.into_iter().map(|r| (r.at, r.id)));
                    if next.is_empty() {
                        break;
                    }
                    token = next;
                }
                assert_eq!(seen, want, "page size {size}");
            }
        }
    }
}
