//! Migrations that create tables, written as data: a service states each table's columns,
//! keys and indexes (or takes them from its sea-orm entity); creating them (each if it does
//! not exist), in order, and dropping them on the way down is written once, here.

use sea_orm::{
    ColumnTrait, DbBackend, DbErr, EntityTrait, Iterable, PrimaryKeyToColumn, RelationTrait,
    Schema,
    sea_query::{
        Iden, Index, IndexCreateStatement, IntoTableRef, Table, TableCreateStatement,
        TableDropStatement,
    },
};
use sea_orm_migration::{MigrationName, MigrationTrait, SchemaManager, async_trait};

/// One table a [`CreateTables`] migration creates, then its indexes.
#[derive(Clone, Copy)]
pub struct NewTable<T: 'static> {
    /// The table's name (the `Table` variant of its `DeriveIden` enum).
    pub table: T,
    /// Its columns and keys, given to `Table::create()` after its name and `IF NOT EXISTS`.
    pub define: fn(&mut TableCreateStatement) -> &mut TableCreateStatement,
    /// Its indexes, created after it in this order (each if it does not exist):
    /// `(name, unique, columns)`.
    pub indexes: &'static [(&'static str, bool, &'static [T])],
}

/// What a [`CreateTables`] migration needs of a table: the statements that create it and
/// its indexes, and the one that drops it.
pub trait TableSpec: Sync {
    /// `CREATE TABLE IF NOT EXISTS …` for `backend`.
    fn create(&self, backend: DbBackend) -> TableCreateStatement;
    /// `CREATE [UNIQUE] INDEX IF NOT EXISTS …`, one per index, in order.
    fn indexes(&self) -> Vec<IndexCreateStatement>;
    /// `DROP TABLE …`.
    fn drop(&self) -> TableDropStatement;
}

impl<T: Iden + Copy + Sync + 'static> TableSpec for NewTable<T> {
    fn create(&self, _: DbBackend) -> TableCreateStatement {
        let mut create = Table::create();
        create.table(self.table).if_not_exists();
        (self.define)(&mut create);
        create
    }

    fn indexes(&self) -> Vec<IndexCreateStatement> {
        index_statements(self.table, self.indexes)
    }

    fn drop(&self) -> TableDropStatement {
        Table::drop().table(self.table).to_owned()
    }
}

/// One table a [`CreateTables`] migration creates as its sea-orm entity declares it (the
/// columns in field order, their types from the field types and `column_type` attributes,
/// the primary key), then its indexes: the table is written down once, in the entity.
///
/// A released migration must keep making what it made: the service's
/// [`assert_released_schema`] test fails when the entity changes under it, and the change
/// then needs a migration of its own (a new column, say), as with any table.
#[derive(Clone, Copy)]
pub struct EntityTable<E: EntityTrait> {
    /// The entity (its unit struct, `Entity`).
    pub entity: E,
    /// Its indexes, created after it in this order (each if it does not exist):
    /// `(name, unique, columns)`.
    pub indexes: &'static [(&'static str, bool, &'static [E::Column])],
}

impl<E: EntityTrait> EntityTable<E> {
    /// The entity's table, with no index but its primary key.
    pub const fn new(entity: E) -> Self {
        Self {
            entity,
            indexes: &[],
        }
    }
}

impl<E: EntityTrait + Sync> TableSpec for EntityTable<E>
where
    E::Column: Sync,
{
    /// As `Schema::create_table_from_entity`, but a nullable column says `NULL`, as the
    /// column builders of sea-orm-migration write it (so a table moved from those to its
    /// entity is created by the same statement), and a key of several columns is unnamed.
    fn create(&self, backend: DbBackend) -> TableCreateStatement {
        let schema = Schema::new(backend);
        let mut create = Table::create();
        create.table(self.entity).if_not_exists();
        for column in E::Column::iter() {
            let mut def = schema.get_column_def::<E>(column);
            if column.def().is_null() {
                def.null();
            }
            create.col(def);
        }
        if E::PrimaryKey::iter().count() > 1 {
            let mut key = Index::create();
            for c in E::PrimaryKey::iter() {
                key.col(c.into_column());
            }
            create.primary_key(&mut key);
        }
        for relation in E::Relation::iter() {
            let relation = relation.def();
            if !relation.is_owner && !relation.skip_fk {
                create.foreign_key(&mut relation.into());
            }
        }
        create
    }

    fn indexes(&self) -> Vec<IndexCreateStatement> {
        index_statements(self.entity, self.indexes)
    }

    fn drop(&self) -> TableDropStatement {
        Table::drop().table(self.entity).to_owned()
    }
}

/// `CREATE [UNIQUE] INDEX IF NOT EXISTS name ON table (columns)`, one per index, in order.
fn index_statements<C: Iden + Copy + 'static>(
    table: impl IntoTableRef + Copy,
    indexes: &[(&'static str, bool, &'static [C])],
) -> Vec<IndexCreateStatement> {
    indexes
        .iter()
        .map(|(name, unique, cols)| {
            let mut index = Index::create();
            index.if_not_exists().name(*name).table(table);
            for c in *cols {
                index.col(*c);
            }
            if *unique {
                index.unique();
            }
            index
        })
        .collect()
}

/// A migration that creates its tables, each followed by its indexes, in order; and drops
/// them, last first, on the way down.
pub struct CreateTables {
    /// The name recorded in `seaql_migrations`: never changed once released.
    pub name: &'static str,
    pub tables: &'static [&'static dyn TableSpec],
}

impl CreateTables {
    /// The SQL `up` runs on `backend`, statement by statement (what a test compares with
    /// the schema a released migration made).
    pub fn up_sql(&self, backend: DbBackend) -> Vec<String> {
        let mut sql = Vec::new();
        for t in self.tables {
            sql.push(backend.build(&t.create(backend)).to_string());
            sql.extend(t.indexes().iter().map(|i| backend.build(i).to_string()));
        }
        sql
    }
}

impl MigrationName for CreateTables {
    fn name(&self) -> &str {
        self.name
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateTables {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let backend = m.get_database_backend();
        for t in self.tables {
            m.create_table(t.create(backend)).await?;
            for index in t.indexes() {
                m.create_index(index).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in self.tables.iter().rev() {
            m.drop_table(t.drop()).await?;
        }
        Ok(())
    }
}

/// The schema a database holds after the first `steps` of `M`'s migrations ran on a fresh
/// in-memory SQLite database: the statement of each table and index, one a line, in the order they were
/// made, as SQLite keeps them (`sqlite_master`, without its own tables and
/// `seaql_migrations`).
pub async fn sqlite_schema<M: sea_orm_migration::MigratorTrait>(
    steps: u32,
) -> Result<String, DbErr> {
    use sea_orm::{ConnectionTrait, Statement};
    let db = sea_orm::Database::connect("sqlite::memory:").await?;
    M::up(&db, Some(steps)).await?;
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL \
             AND name NOT LIKE 'sqlite_%' AND name NOT LIKE 'seaql_%' ORDER BY rowid",
        ))
        .await?;
    let sql = rows
        .iter()
        .map(|r| r.try_get::<String>("", "sql"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(sql.join("\n"))
}

/// Panics unless the first `steps` of `M`'s migrations (the released ones) make `released`
/// (as [`sqlite_schema`] reads it): the schema they made when they were released, so that a
/// migration rewritten later provably runs the same statements.
pub async fn assert_released_schema<M: sea_orm_migration::MigratorTrait>(
    steps: u32,
    released: &str,
) {
    match sqlite_schema::<M>(steps).await {
        Ok(schema) => assert_eq!(schema, released.trim(), "the schema changed"),
        Err(e) => panic!("the migrations fail: {e}"),
    }
}
