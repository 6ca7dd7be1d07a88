//! The in-memory catalog with Flink's defaults: catalogs hold databases, databases hold tables
//! and views. `default_catalog` and its `default_database` always exist; names of one or two parts
//! resolve against the current catalog and database.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion_expr::LogicalPlan;
use rsql_common::catalog::{ObjectPath, TableDef};
use rsql_common::options::did_you_mean;
use rsql_common::{Location, Result, RsqlError};
use rsql_sql::Name;

pub const DEFAULT_CATALOG: &str = "default_catalog";
pub const DEFAULT_DATABASE: &str = "default_database";

#[derive(Clone, Debug)]
pub struct ViewDef {
    pub path: ObjectPath,
    pub plan: Arc<LogicalPlan>,
    pub text: String,
}

#[derive(Clone, Debug)]
pub enum CatalogEntry {
    Table(Arc<TableDef>),
    View(Arc<ViewDef>),
}

#[derive(Clone, Debug, Default)]
pub struct Database {
    pub objects: BTreeMap<String, CatalogEntry>,
}

#[derive(Clone, Debug)]
pub struct Catalog {
    catalogs: BTreeMap<String, BTreeMap<String, Database>>,
    pub current_catalog: String,
    pub current_database: String,
}

impl Default for Catalog {
    fn default() -> Self {
        let mut dbs = BTreeMap::new();
        dbs.insert(DEFAULT_DATABASE.to_string(), Database::default());
        let mut catalogs = BTreeMap::new();
        catalogs.insert(DEFAULT_CATALOG.to_string(), dbs);
        Catalog { catalogs, current_catalog: DEFAULT_CATALOG.into(), current_database: DEFAULT_DATABASE.into() }
    }
}

fn not_found(what: &str, name: &str, candidates: Vec<&str>, location: Option<Location>) -> RsqlError {
    let hint = match did_you_mean(name, candidates.iter().copied()) {
        Some(s) => format!("; did you mean '{s}'?"),
        None => String::new(),
    };
    RsqlError::validation(format!("{what} '{name}' does not exist{hint}"), location)
}

impl Catalog {
    /// Completes a 1-, 2- or 3-part name with the current catalog and database.
    pub fn qualify(&self, name: &Name) -> Result<ObjectPath> {
        let p = &name.parts;
        Ok(match p.len() {
            1 => ObjectPath::new(&self.current_catalog, &self.current_database, &p[0]),
            2 => ObjectPath::new(&self.current_catalog, &p[0], &p[1]),
            3 => ObjectPath::new(&p[0], &p[1], &p[2]),
            _ => return Err(RsqlError::validation(format!("'{name}' is not a valid object name"), Some(name.location))),
        })
    }

    pub fn qualify_parts(&self, parts: &[String]) -> Option<ObjectPath> {
        Some(match parts.len() {
            1 => ObjectPath::new(&self.current_catalog, &self.current_database, &parts[0]),
            2 => ObjectPath::new(&self.current_catalog, &parts[0], &parts[1]),
            3 => ObjectPath::new(&parts[0], &parts[1], &parts[2]),
            _ => return None,
        })
    }

    pub fn catalog_names(&self) -> Vec<String> {
        self.catalogs.keys().cloned().collect()
    }

    pub fn create_catalog(&mut self, name: &str, if_not_exists: bool, location: Location) -> Result<()> {
        if self.catalogs.contains_key(name) {
            if if_not_exists {
                return Ok(());
            }
            return Err(RsqlError::validation(format!("catalog '{name}' already exists"), Some(location)));
        }
        let mut dbs = BTreeMap::new();
        dbs.insert(DEFAULT_DATABASE.to_string(), Database::default());
        self.catalogs.insert(name.to_string(), dbs);
        Ok(())
    }

    pub fn drop_catalog(&mut self, name: &str, if_exists: bool, location: Location) -> Result<()> {
        if name == self.current_catalog {
            return Err(RsqlError::validation(format!("cannot drop the current catalog '{name}'"), Some(location)));
        }
        if self.catalogs.remove(name).is_none() && !if_exists {
            return Err(not_found("catalog", name, self.catalogs.keys().map(|s| s.as_str()).collect(), Some(location)));
        }
        Ok(())
    }

    fn catalog(&self, name: &str, location: Option<Location>) -> Result<&BTreeMap<String, Database>> {
        self.catalogs
            .get(name)
            .ok_or_else(|| not_found("catalog", name, self.catalogs.keys().map(|s| s.as_str()).collect(), location))
    }

    pub fn use_catalog(&mut self, name: &str, location: Location) -> Result<()> {
        let dbs = self.catalog(name, Some(location))?;
        let db = if dbs.contains_key(DEFAULT_DATABASE) {
            DEFAULT_DATABASE.to_string()
        } else {
            dbs.keys().next().cloned().unwrap_or_else(|| DEFAULT_DATABASE.to_string())
        };
        self.current_catalog = name.to_string();
        self.current_database = db;
        Ok(())
    }

    pub fn database_names(&self) -> Vec<String> {
        self.catalogs.get(&self.current_catalog).map(|d| d.keys().cloned().collect()).unwrap_or_default()
    }

    /// Resolves `[catalog.]database`.
    pub fn database_path(&self, name: &Name) -> Result<(String, String)> {
        match name.parts.len() {
            1 => Ok((self.current_catalog.clone(), name.parts[0].clone())),
            2 => Ok((name.parts[0].clone(), name.parts[1].clone())),
            _ => Err(RsqlError::validation(format!("'{name}' is not a database name ([catalog.]database)"), Some(name.location))),
        }
    }

    pub fn create_database(&mut self, name: &Name, if_not_exists: bool) -> Result<()> {
        let (c, d) = self.database_path(name)?;
        let cands: Vec<String> = self.catalogs.keys().cloned().collect();
        let Some(dbs) = self.catalogs.get_mut(&c) else {
            return Err(not_found("catalog", &c, cands.iter().map(|s| s.as_str()).collect(), Some(name.location)));
        };
        if dbs.contains_key(&d) {
            if if_not_exists {
                return Ok(());
            }
            return Err(RsqlError::validation(format!("database '{c}.{d}' already exists"), Some(name.location)));
        }
        dbs.insert(d, Database::default());
        Ok(())
    }

    pub fn drop_database(&mut self, name: &Name, if_exists: bool, cascade: bool) -> Result<()> {
        let (c, d) = self.database_path(name)?;
        if c == self.current_catalog && d == self.current_database {
            return Err(RsqlError::validation(format!("cannot drop the current database '{d}'"), Some(name.location)));
        }
        let Some(dbs) = self.catalogs.get_mut(&c) else {
            if if_exists {
                return Ok(());
            }
            return Err(RsqlError::validation(format!("catalog '{c}' does not exist"), Some(name.location)));
        };
        match dbs.get(&d) {
            None if if_exists => Ok(()),
            None => Err(RsqlError::validation(format!("database '{c}.{d}' does not exist"), Some(name.location))),
            Some(db) if !db.objects.is_empty() && !cascade => Err(RsqlError::validation(
                format!("database '{c}.{d}' is not empty; drop its tables first or use DROP DATABASE ... CASCADE"),
                Some(name.location),
            )),
            Some(_) => {
                dbs.remove(&d);
                Ok(())
            }
        }
    }

    pub fn use_database(&mut self, name: &Name) -> Result<()> {
        let (c, d) = self.database_path(name)?;
        let dbs = self.catalog(&c, Some(name.location))?;
        if !dbs.contains_key(&d) {
            return Err(not_found("database", &d, dbs.keys().map(|s| s.as_str()).collect(), Some(name.location)));
        }
        self.current_catalog = c;
        self.current_database = d;
        Ok(())
    }

    fn database_mut(&mut self, path: &ObjectPath, location: Location) -> Result<&mut Database> {
        let cands: Vec<String> = self.catalogs.keys().cloned().collect();
        let Some(dbs) = self.catalogs.get_mut(&path.catalog) else {
            return Err(not_found("catalog", &path.catalog, cands.iter().map(|s| s.as_str()).collect(), Some(location)));
        };
        let dcands: Vec<String> = dbs.keys().cloned().collect();
        dbs.get_mut(&path.database)
            .ok_or_else(|| not_found("database", &path.database, dcands.iter().map(|s| s.as_str()).collect(), Some(location)))
    }

    pub fn database(&self, catalog: &str, database: &str) -> Option<&Database> {
        self.catalogs.get(catalog)?.get(database)
    }

    /// Registers a table or view; `Ok(false)` when it exists and `if_not_exists` was given.
    pub fn register(&mut self, path: &ObjectPath, entry: CatalogEntry, if_not_exists: bool, location: Location) -> Result<bool> {
        let db = self.database_mut(path, location)?;
        if db.objects.contains_key(&path.name) {
            if if_not_exists {
                return Ok(false);
            }
            return Err(RsqlError::validation(
                format!("a table or view named {path} already exists; use CREATE ... IF NOT EXISTS or DROP it first"),
                Some(location),
            ));
        }
        db.objects.insert(path.name.clone(), entry);
        Ok(true)
    }

    pub fn drop_object(&mut self, name: &Name, if_exists: bool, view: bool) -> Result<()> {
        let path = self.qualify(name)?;
        let what = if view { "view" } else { "table" };
        let db = match self.database_mut(&path, name.location) {
            Ok(db) => db,
            Err(_) if if_exists => return Ok(()),
            Err(e) => return Err(e),
        };
        match db.objects.get(&path.name) {
            Some(CatalogEntry::View(_)) if !view => Err(RsqlError::validation(format!("{path} is a view; use DROP VIEW"), Some(name.location))),
            Some(CatalogEntry::Table(_)) if view => Err(RsqlError::validation(format!("{path} is a table; use DROP TABLE"), Some(name.location))),
            Some(_) => {
                db.objects.remove(&path.name);
                Ok(())
            }
            None if if_exists => Ok(()),
            None => Err(not_found(what, &path.name, db.objects.keys().map(|s| s.as_str()).collect(), Some(name.location))),
        }
    }

    pub fn lookup(&self, path: &ObjectPath) -> Option<&CatalogEntry> {
        self.catalogs.get(&path.catalog)?.get(&path.database)?.objects.get(&path.name)
    }

    /// Finds a table or view, with a "did you mean" error.
    pub fn resolve(&self, name: &Name) -> Result<(ObjectPath, CatalogEntry)> {
        let path = self.qualify(name)?;
        self.resolve_path(&path, Some(name.location))
    }

    pub fn resolve_path(&self, path: &ObjectPath, location: Option<Location>) -> Result<(ObjectPath, CatalogEntry)> {
        if let Some(e) = self.lookup(path) {
            return Ok((path.clone(), e.clone()));
        }
        let cands: Vec<&str> = self
            .database(&path.catalog, &path.database)
            .map(|d| d.objects.keys().map(|s| s.as_str()).collect())
            .unwrap_or_default();
        if self.database(&path.catalog, &path.database).is_none() {
            return Err(RsqlError::validation(
                format!("table {path} does not exist: there is no database `{}`.`{}`", path.catalog, path.database),
                location,
            ));
        }
        Err(not_found("table", &path.name, cands, location).with_path(path))
    }

    pub fn object_names(&self, views: Option<bool>) -> Vec<String> {
        self.database(&self.current_catalog, &self.current_database)
            .map(|d| {
                d.objects
                    .iter()
                    .filter(|(_, e)| match (views, e) {
                        (None, _) => true,
                        (Some(true), CatalogEntry::View(_)) => true,
                        (Some(false), CatalogEntry::Table(_)) => true,
                        _ => false,
                    })
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

trait WithPath {
    fn with_path(self, path: &ObjectPath) -> Self;
}

impl WithPath for RsqlError {
    fn with_path(self, path: &ObjectPath) -> Self {
        match self {
            RsqlError::Validation { message, location } => RsqlError::Validation {
                message: message.replacen(&format!("'{}'", path.name), &path.to_string(), 1),
                location,
            },
            other => other,
        }
    }
}
