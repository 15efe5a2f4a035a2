//! Roles and privileges as SQL: CREATE/ALTER/DROP ROLE (and USER), GRANT
//! and REVOKE, stored by `auth::Roles`; and [`Engine::authorize`], the one
//! check both protocols make before a statement runs (a role holds
//! PostgreSQL's SELECT/INSERT/UPDATE/DELETE on relations; superusers hold
//! everything; only superusers define objects and roles, as eddy has no
//! object owners).

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Action, AlterRoleOperation, CreateRole, Expr, FromTable, GrantObjects, Grantee, GranteeName,
    GranteesType, ObjectName, ObjectNamePart, Password, Privileges, RoleOption, TableFactor, Value,
    Visit, visit_relations,
};

use super::statement::{Access, Copy, Dml, Statement};
use super::{Engine, EngineError, Output, Result, SessionCommand};
use crate::auth::{Privilege, Role, Secret, TopicAccess};
use crate::catalog::Object;

fn denied(message: String) -> EngineError {
    EngineError::Access {
        code: "42501",
        message,
    }
}

fn no_role(name: &str) -> EngineError {
    EngineError::Access {
        code: "42704",
        message: format!("role \"{name}\" does not exist"),
    }
}

/// A password literal; PostgreSQL's pre-hashed forms are refused, since
/// each mechanism's secret is derived from the password itself.
fn password(p: &Password) -> Result<Option<String>> {
    match p {
        Password::NullPassword => Ok(None),
        Password::Password(Expr::Value(v)) => match &v.value {
            Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s)
                if s.starts_with("SCRAM-SHA-256$") || (s.len() == 35 && s.starts_with("md5")) =>
            {
                Err(EngineError::Unsupported(
                    "an already-hashed password (give it in clear: eddy stores salted hashes for each mechanism)".into(),
                ))
            }
            Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => Ok(Some(s.clone())),
            Value::Null => Ok(None),
            other => Err(EngineError::Invalid(format!(
                "PASSWORD takes a string literal, not {other}"
            ))),
        },
        Password::Password(other) => Err(EngineError::Invalid(format!(
            "PASSWORD takes a string literal, not {other}"
        ))),
    }
}

/// Role options eddy keeps; the rest are accepted only at their default.
fn apply_option(role: &mut Role, o: &RoleOption) -> Result<()> {
    match o {
        RoleOption::Login(b) => role.login = *b,
        RoleOption::SuperUser(b) => role.superuser = *b,
        RoleOption::Password(p) => {
            role.secret = password(p)?.map(|pw| Secret::new(&role.name, &pw));
        }
        RoleOption::Inherit(true)
        | RoleOption::CreateDB(false)
        | RoleOption::CreateRole(false)
        | RoleOption::Replication(false)
        | RoleOption::BypassRLS(false) => {}
        other => {
            return Err(EngineError::Unsupported(format!(
                "role option {other} (eddy keeps LOGIN, SUPERUSER and PASSWORD)"
            )));
        }
    }
    Ok(())
}

fn create_options(c: &CreateRole) -> Vec<RoleOption> {
    let mut out = Vec::new();
    if let Some(b) = c.login {
        out.push(RoleOption::Login(b));
    }
    if let Some(b) = c.superuser {
        out.push(RoleOption::SuperUser(b));
    }
    if let Some(p) = &c.password {
        out.push(RoleOption::Password(p.clone()));
    }
    if let Some(b) = c.inherit {
        out.push(RoleOption::Inherit(b));
    }
    if let Some(b) = c.create_db {
        out.push(RoleOption::CreateDB(b));
    }
    if let Some(b) = c.create_role {
        out.push(RoleOption::CreateRole(b));
    }
    if let Some(b) = c.replication {
        out.push(RoleOption::Replication(b));
    }
    if let Some(b) = c.bypassrls {
        out.push(RoleOption::BypassRLS(b));
    }
    if let Some(e) = &c.connection_limit {
        out.push(RoleOption::ConnectionLimit(e.clone()));
    }
    if let Some(e) = &c.valid_until {
        out.push(RoleOption::ValidUntil(e.clone()));
    }
    out
}

/// The name an identifier list gives (a quoted name as written, an
/// unquoted one as typed), and whether it was quoted.
fn spelled(name: &ObjectName) -> (String, bool) {
    match name.0.last() {
        Some(ObjectNamePart::Identifier(i)) => (i.value.clone(), i.quote_style.is_some()),
        _ => (name.to_string(), false),
    }
}

fn privileges(p: &Privileges) -> Result<Vec<Privilege>> {
    match p {
        Privileges::All { .. } => Ok(Privilege::ALL.to_vec()),
        Privileges::Actions(actions) => actions
            .iter()
            .map(|a| match a {
                Action::Select { columns: None } => Ok(Privilege::Select),
                Action::Insert { columns: None } => Ok(Privilege::Insert),
                Action::Update { columns: None } => Ok(Privilege::Update),
                Action::Delete => Ok(Privilege::Delete),
                other => Err(EngineError::Unsupported(format!(
                    "privilege {other} (eddy grants SELECT, INSERT, UPDATE and DELETE on relations)"
                ))),
            })
            .collect(),
    }
}

fn grantees(g: &[Grantee]) -> Result<Vec<String>> {
    g.iter()
        .map(|g| match (&g.grantee_type, &g.name) {
            (
                GranteesType::Role | GranteesType::None | GranteesType::User,
                Some(GranteeName::ObjectName(n)),
            ) => Ok(spelled(n).0),
            _ => Err(EngineError::Unsupported(format!(
                "grantee {g} (name a role)"
            ))),
        })
        .collect()
}

impl Engine {
    /// The catalog name a statement's relation name refers to, if any
    /// (folded as PostgreSQL folds it: `names::object`).
    pub(super) fn resolve_relation(&self, name: &ObjectName) -> Option<String> {
        let name = super::names::object(name);
        self.lock().ok()?.get(&name).is_some().then_some(name)
    }

    /// The catalog relations a statement (or part of one) reads.
    fn relations_of<V: Visit>(&self, v: &V) -> Vec<String> {
        let mut out = Vec::new();
        let _ = visit_relations(v, |n: &ObjectName| {
            if let Some(r) = self.resolve_relation(n) {
                out.push(r);
            }
            ControlFlow::<()>::Continue(())
        });
        out
    }

    /// Whether `role` may run `stmt`: 42501 naming what is missing if not.
    /// Relations a statement reads need SELECT; the one it writes needs
    /// INSERT, UPDATE or DELETE; objects and roles are a superuser's.
    pub fn authorize(&self, role: &Role, stmt: &Statement) -> Result<()> {
        if role.superuser {
            return Ok(());
        }
        let need = |privilege: Privilege, relations: Vec<String>| -> Result<()> {
            for r in relations {
                if !role.may(privilege, &r) {
                    return Err(denied(format!(
                        "permission denied for {} \"{r}\" ({} needed)",
                        self.lock()?.get(&r).map(Object::kind).unwrap_or("relation"),
                        privilege.name()
                    )));
                }
            }
            Ok(())
        };
        // A write: `privilege` on its targets, SELECT on what else it reads
        // (a target named once more, in a subquery, is read too).
        let write = |privilege: Privilege, targets: Vec<String>, mut reads: Vec<String>| {
            for t in &targets {
                if let Some(i) = reads.iter().position(|r| r == t) {
                    reads.remove(i);
                }
            }
            need(privilege, targets)?;
            need(Privilege::Select, reads)
        };
        match stmt {
            // A role may set its own password, as in PostgreSQL.
            Statement::Access(Access::AlterRole { name, operation })
                if *name == role.name
                    && matches!(&**operation, AlterRoleOperation::WithOptions { options }
                        if options.iter().all(|o| matches!(o, RoleOption::Password(_)))) =>
            {
                Ok(())
            }
            Statement::Ddl(_) | Statement::Access(_) => Err(denied(format!(
                "permission denied: only a superuser may define objects and roles (role \"{}\" is not one)",
                role.name
            ))),
            Statement::Dml(Dml::Insert(s)) => {
                let target = match &**s {
                    datafusion::sql::sqlparser::ast::Statement::Insert(i) => match &i.table {
                        datafusion::sql::sqlparser::ast::TableObject::TableName(n) => {
                            self.resolve_relation(n)
                        }
                        _ => None,
                    },
                    _ => None,
                };
                write(
                    Privilege::Insert,
                    target.into_iter().collect(),
                    self.relations_of(&**s),
                )
            }
            Statement::Dml(Dml::Update(u)) => {
                let target = match &u.table.relation {
                    TableFactor::Table { name, .. } => self.resolve_relation(name),
                    _ => None,
                };
                write(
                    Privilege::Update,
                    target.into_iter().collect(),
                    self.relations_of(&**u),
                )
            }
            Statement::Dml(Dml::Delete(d)) => {
                let targets: Vec<String> = match &d.from {
                    FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t
                        .iter()
                        .filter_map(|t| match &t.relation {
                            TableFactor::Table { name, .. } => self.resolve_relation(name),
                            _ => None,
                        })
                        .collect(),
                };
                write(Privilege::Delete, targets, self.relations_of(&**d))
            }
            Statement::Copy(Copy::To { source, .. }) => {
                let reads = match source {
                    datafusion::sql::sqlparser::ast::CopySource::Table { table_name, .. } => {
                        self.resolve_relation(table_name).into_iter().collect()
                    }
                    datafusion::sql::sqlparser::ast::CopySource::Query(q) => {
                        self.relations_of(&**q)
                    }
                };
                need(Privilege::Select, reads)
            }
            Statement::Copy(Copy::From { table, .. }) => {
                let name = ObjectName::from(vec![datafusion::sql::sqlparser::ast::Ident::new(
                    table.clone(),
                )]);
                need(
                    Privilege::Insert,
                    self.resolve_relation(&name)
                        .into_iter()
                        .chain(self.lock()?.get(table).map(|o| o.name().to_string()))
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect(),
                )
            }
            Statement::Copy(Copy::Other) => Ok(()),
            Statement::Subscribe { query: Some(q), .. } => {
                need(Privilege::Select, self.relations_of(&**q))
            }
            Statement::Subscribe { name, .. } => need(Privilege::Select, vec![name.clone()]),
            Statement::Session(SessionCommand::Declare { query, .. }) => {
                need(Privilege::Select, self.relations_of(&**query))
            }
            Statement::Flush | Statement::Session(_) | Statement::CatalogQuery(..) => Ok(()),
            // Queries, and what passes through (a cursor's query): every
            // relation named is read.
            Statement::Query(s, _) | Statement::Other(s, _) => {
                need(Privilege::Select, self.relations_of(&**s))
            }
        }
    }

    /// Run a statement about roles or privileges.
    pub(super) async fn access(&self, a: Access) -> Result<Output> {
        let roles = &self.roles;
        match a {
            Access::CreateRole { role, user } => {
                if role.names.len() != 1 {
                    return Err(EngineError::Unsupported(
                        "CREATE ROLE of several roles at once".into(),
                    ));
                }
                let (name, _) = spelled(&role.names[0]);
                if roles.get(&name).is_some() {
                    if role.if_not_exists {
                        return Ok(Output::Command("CREATE ROLE".into(), None));
                    }
                    return Err(EngineError::Access {
                        code: "42710",
                        message: format!("role \"{name}\" already exists"),
                    });
                }
                let mut new = Role {
                    name: name.clone(),
                    login: user,
                    superuser: false,
                    secret: None,
                    grants: Default::default(),
                };
                for o in create_options(&role) {
                    apply_option(&mut new, &o)?;
                }
                roles.put(new)?;
                Ok(Output::Command("CREATE ROLE".into(), None))
            }
            Access::AlterRole { name, operation } => {
                let AlterRoleOperation::WithOptions { options } = *operation else {
                    return Err(EngineError::Unsupported(format!(
                        "ALTER ROLE … {operation} (eddy alters LOGIN, SUPERUSER and PASSWORD)"
                    )));
                };
                let mut role = roles.get(&name).ok_or_else(|| no_role(&name))?;
                for o in &options {
                    apply_option(&mut role, o)?;
                }
                roles.put(role)?;
                Ok(Output::Command("ALTER ROLE".into(), None))
            }
            Access::DropRole { names, if_exists } => {
                for name in &names {
                    if roles.get(name).is_none() && !if_exists {
                        return Err(no_role(name));
                    }
                }
                for name in &names {
                    roles.remove(name)?;
                }
                Ok(Output::Command("DROP ROLE".into(), None))
            }
            Access::Grant(g) => {
                let (relations, privileges, to) =
                    self.grant_parts(&g.privileges, g.objects.as_ref(), &g.grantees)?;
                for r in &to {
                    roles.update(r, |role| {
                        for rel in &relations {
                            role.grants
                                .entry(rel.clone())
                                .or_default()
                                .extend(privileges.iter().copied());
                        }
                    })?;
                }
                Ok(Output::Command("GRANT".into(), None))
            }
            Access::Revoke(g) => {
                let (relations, privileges, from) =
                    self.grant_parts(&g.privileges, g.objects.as_ref(), &g.grantees)?;
                for r in &from {
                    roles.update(r, |role| {
                        for rel in &relations {
                            if let Some(held) = role.grants.get_mut(rel) {
                                for p in &privileges {
                                    held.remove(p);
                                }
                                if held.is_empty() {
                                    role.grants.remove(rel);
                                }
                            }
                        }
                    })?;
                }
                Ok(Output::Command("REVOKE".into(), None))
            }
        }
    }

    /// A GRANT's or REVOKE's relations, privileges and roles, each checked
    /// to exist.
    fn grant_parts(
        &self,
        privileges_: &Privileges,
        objects: Option<&GrantObjects>,
        grantees_: &[Grantee],
    ) -> Result<(Vec<String>, Vec<Privilege>, Vec<String>)> {
        let privileges = privileges(privileges_)?;
        let relations: Vec<String> = match objects {
            Some(GrantObjects::Tables(names) | GrantObjects::Views(names)) => names
                .iter()
                .map(|n| {
                    self.resolve_relation(n)
                        .ok_or_else(|| EngineError::UnknownObject {
                            kind: "relation",
                            name: spelled(n).0,
                        })
                })
                .collect::<Result<_>>()?,
            Some(
                GrantObjects::AllTablesInSchema { .. }
                | GrantObjects::AllViewsInSchema { .. }
                | GrantObjects::AllMaterializedViewsInSchema { .. },
            ) => self
                .lock()?
                .objects()
                .filter(|o| !matches!(o, Object::Sink { .. } | Object::Index { .. }))
                .map(|o| o.name().to_string())
                .collect(),
            Some(other) => {
                return Err(EngineError::Unsupported(format!(
                    "privileges on {other} (eddy grants on relations)"
                )));
            }
            None => {
                return Err(EngineError::Unsupported(
                    "granting a role to a role (role membership)".into(),
                ));
            }
        };
        let roles = grantees(grantees_)?;
        for r in &roles {
            if self.roles.get(r).is_none() {
                return Err(no_role(r));
            }
        }
        Ok((relations, privileges, roles))
    }

    /// The streams and tables that read `topic`.
    fn relations_over(&self, topic: &str) -> Vec<String> {
        self.lock()
            .map(|c| {
                c.objects()
                    .filter(|o| match o {
                        Object::Stream { topic: t, .. } | Object::Table { topic: t, .. } => {
                            t == topic
                        }
                        _ => false,
                    })
                    .map(|o| o.name().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The roles (`auth::Roles`), for the protocols' logins.
    pub fn roles(&self) -> &std::sync::Arc<crate::auth::Roles> {
        &self.roles
    }
}

/// A Kafka principal may use a topic when it holds the privilege on a
/// stream or table over it; topics no relation reads are a superuser's.
impl TopicAccess for Engine {
    fn may(&self, role: &Role, privilege: Privilege, topic: &str) -> bool {
        role.superuser
            || self
                .relations_over(topic)
                .iter()
                .any(|r| role.may(privilege, r))
    }
}
