//! The options of a `$backupCursor` stage, parsed and checked as PSMDB 7.0's
//! `DocumentSourceBackupCursor::createFromBson` does, plus the checks that sit deeper in the
//! server (see each).

use crate::node::CmdError;
use bson::{Bson, Document};

const STAGE: &str = "$backupCursor";

/// `{incrementalBackup, thisBackupName, srcBackupName, blockSize, disableIncrementalBackup}`.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupOptions {
    pub incremental: bool,
    pub disable: bool,
    /// Megabytes, as asked (PSMDB's default 16).
    pub block_mb: i64,
    pub this_name: Option<String>,
    pub src_name: Option<String>,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            incremental: false,
            disable: false,
            block_mb: 16,
            this_name: None,
            src_name: None,
        }
    }
}

/// mongod's name of a BSON type, as its messages spell it.
fn type_name(v: &Bson) -> &'static str {
    match v {
        Bson::Double(_) => "double",
        Bson::String(_) => "string",
        Bson::Document(_) => "object",
        Bson::Array(_) => "array",
        Bson::Binary(_) => "binData",
        Bson::Undefined => "undefined",
        Bson::ObjectId(_) => "objectId",
        Bson::Boolean(_) => "bool",
        Bson::DateTime(_) => "date",
        Bson::Null => "null",
        Bson::RegularExpression(_) => "regex",
        Bson::DbPointer(_) => "dbPointer",
        Bson::JavaScriptCode(_) => "javascript",
        Bson::Symbol(_) => "symbol",
        Bson::JavaScriptCodeWithScope(_) => "javascriptWithScope",
        Bson::Int32(_) => "int",
        Bson::Timestamp(_) => "timestamp",
        Bson::Int64(_) => "long",
        Bson::Decimal128(_) => "decimal",
        Bson::MinKey => "minKey",
        Bson::MaxKey => "maxKey",
    }
}

fn invalid(msg: &str) -> CmdError {
    CmdError::new(72, "InvalidOptions", msg)
}

fn wrong_type(field: &str, want: &str, v: &Bson) -> CmdError {
    CmdError::new(
        14,
        "TypeMismatch",
        format!(
            "The '{field}' parameter of the {STAGE} stage must be {want} value, but found: {}",
            type_name(v)
        ),
    )
}

impl BackupOptions {
    /// The options of the `aggregate` command's first stage.
    pub fn parse(cmd: &Document) -> Result<BackupOptions, CmdError> {
        let spec = cmd
            .get_array("pipeline")
            .ok()
            .and_then(|p| p.first())
            .and_then(Bson::as_document)
            .and_then(|stage| stage.get(STAGE))
            .cloned()
            .unwrap_or_else(|| Bson::Document(Document::new()));
        let Bson::Document(spec) = spec else {
            return Err(CmdError::new(
                9,
                "FailedToParse",
                format!(
                    "{STAGE} parameters must be specified in an object, but found: {}",
                    type_name(&spec)
                ),
            ));
        };
        let o = Self::fields(&spec)?;
        o.check()?;
        Ok(o)
    }

    fn fields(spec: &Document) -> Result<BackupOptions, CmdError> {
        let mut o = BackupOptions::default();
        for (k, v) in spec {
            match (k.as_str(), v) {
                ("disableIncrementalBackup", Bson::Boolean(b)) => o.disable = *b,
                ("incrementalBackup", Bson::Boolean(b)) => o.incremental = *b,
                ("blockSize", Bson::Int32(n)) => o.block_mb = i64::from(*n),
                ("thisBackupName", Bson::String(s)) => o.this_name = Some(s.clone()),
                ("srcBackupName", Bson::String(s)) => o.src_name = Some(s.clone()),
                ("disableIncrementalBackup" | "incrementalBackup", v) => {
                    return Err(wrong_type(k, "a boolean", v));
                }
                ("blockSize", v) => return Err(wrong_type(k, "an integer", v)),
                ("thisBackupName" | "srcBackupName", v) => {
                    return Err(wrong_type(k, "a string", v));
                }
                _ => {
                    return Err(CmdError::new(
                        9,
                        "FailedToParse",
                        format!("Unrecognized option '{k}' in {STAGE} stage"),
                    ));
                }
            }
        }
        Ok(o)
    }

    fn check(&self) -> Result<(), CmdError> {
        if self.incremental && self.disable {
            return Err(invalid(
                "'incrementalBackup' and 'disableIncrementalBackup' parameters are mutually \
                 exclusive. Cannot enable both",
            ));
        }
        if !self.incremental && (self.this_name.is_some() || self.src_name.is_some()) {
            return Err(invalid(
                "'thisBackupName' and 'srcBackupName' parameters are only allowed when \
                 'incrementalBackup' is true",
            ));
        }
        // MongoDB Enterprise's check and wording; PSMDB's parser has none, and what its
        // storage layer answers is unconfirmed.
        if self.incremental && self.this_name.is_none() {
            return Err(invalid(
                "'thisBackupName' needs to exist when incrementalBackup=true",
            ));
        }
        // The sim's own check: WiredTiger refuses a granularity below its minimum. Only an
        // incremental backup hands the block size to WiredTiger.
        if self.incremental && self.block_mb < 1 {
            return Err(CmdError::new(
                2,
                "BadValue",
                format!("blockSize must be at least 1 (MB), got {}", self.block_mb),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn parse(spec: Bson) -> Result<BackupOptions, CmdError> {
        BackupOptions::parse(&doc! {"aggregate": 1, "pipeline": [{"$backupCursor": spec}]})
    }

    #[test]
    fn defaults_and_fields() {
        assert_eq!(
            parse(Bson::Document(doc! {})).unwrap(),
            BackupOptions::default()
        );
        let o = parse(Bson::Document(
            doc! {"incrementalBackup": true, "thisBackupName": "b", "srcBackupName": "a", "blockSize": 4},
        ))
        .unwrap();
        assert_eq!((o.block_mb, o.src_name.as_deref()), (4, Some("a")));
    }

    #[test]
    fn refusals_carry_psmdb_codes() {
        let code = |spec: Document| parse(Bson::Document(spec)).unwrap_err().code;
        assert_eq!(code(doc! {"incrementalBackup": 1}), 14);
        assert_eq!(code(doc! {"blockSize": 1i64}), 14);
        assert_eq!(code(doc! {"foo": 1}), 9);
        assert_eq!(code(doc! {"thisBackupName": "a"}), 72);
        assert_eq!(
            code(doc! {"incrementalBackup": true, "disableIncrementalBackup": true}),
            72
        );
        assert_eq!(code(doc! {"incrementalBackup": true}), 72);
        assert_eq!(
            code(doc! {"incrementalBackup": true, "thisBackupName": "a", "blockSize": 0}),
            2
        );
        assert_eq!(parse(Bson::Int32(1)).unwrap_err().code, 9);
    }
}
