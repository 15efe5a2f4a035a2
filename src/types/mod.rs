//! SQL types as users write them (PostgreSQL's names, Materialize's
//! `string`, ksqlDB's `VARCHAR`/`STRING`/`BIGINT`) mapped to Arrow types.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, IntervalUnit, TimeUnit};
use datafusion::sql::sqlparser::ast::{
    ArrayElemTypeDef, DataType as SqlType, ExactNumberInfo, TimezoneInfo,
};

pub mod input;
pub mod jsonb;

/// The scale of an unconstrained `numeric` (Arrow decimals have one fixed
/// scale; PostgreSQL's numeric has none). Its values print without the
/// trailing zeros this adds (`server/pg/text.rs`).
pub const UNCONSTRAINED_NUMERIC_SCALE: i8 = 10;

/// The field metadata key that names a column's PostgreSQL type where its
/// Arrow type alone does not: `jsonb` and `uuid` for UTF-8 columns, so
/// clients are told (and send parameters as) the type the column was
/// declared with.
pub const PG_TYPE_KEY: &str = "eddy.pg_type";

/// `field` tagged as holding values of PostgreSQL's type `name`.
pub fn tag_pg_type(field: Field, name: &str) -> Field {
    let mut metadata = field.metadata().clone();
    metadata.insert(PG_TYPE_KEY.into(), name.into());
    field.with_metadata(metadata)
}

/// The PostgreSQL type `field` is tagged with, if any.
pub fn pg_type_of(field: &Field) -> Option<&str> {
    field.metadata().get(PG_TYPE_KEY).map(String::as_str)
}

/// The field of a column declared `name sql_type`: its Arrow type, tagged
/// where PostgreSQL's type is not the one the Arrow type stands for.
pub fn field(name: &str, sql_type: &SqlType) -> Result<Field, UnsupportedType> {
    let f = Field::new(name, to_arrow(sql_type)?, true);
    Ok(match sql_type {
        SqlType::JSON | SqlType::JSONB => jsonb::tag(f),
        SqlType::Uuid => tag_pg_type(f, "uuid"),
        _ => f,
    })
}

/// Why a type is not accepted.
#[derive(Debug, thiserror::Error)]
#[error("type {0} is not supported")]
pub struct UnsupportedType(pub String);

/// PostgreSQL's name for the type an Arrow type stands for (in messages).
pub fn pg_name(t: &DataType) -> String {
    match t {
        DataType::Null => "unknown".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Int16 => "smallint".into(),
        DataType::Int32 => "integer".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal128(..) => "numeric".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Binary => "bytea".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(_, Some(_)) => "timestamp with time zone".into(),
        DataType::Timestamp(_, None) => "timestamp without time zone".into(),
        DataType::Interval(_) => "interval".into(),
        DataType::List(f) | DataType::LargeList(f) => format!("{}[]", pg_name(f.data_type())),
        // ksqlDB's STRUCT (a composite: PostgreSQL's `record`) and MAP.
        DataType::Struct(_) => "record".into(),
        DataType::Map(..) => "map".into(),
        other => other.to_string(),
    }
}

/// Arrow type for a SQL column type.
pub fn to_arrow(t: &SqlType) -> Result<DataType, UnsupportedType> {
    use SqlType as S;
    Ok(match t {
        S::Boolean | S::Bool => DataType::Boolean,
        S::SmallInt(_) | S::Int2(_) => DataType::Int16,
        S::Int(_) | S::Integer(_) | S::Int4(_) | S::MediumInt(_) => DataType::Int32,
        S::BigInt(_) | S::Int8(_) => DataType::Int64,
        S::Real | S::Float4 => DataType::Float32,
        S::Double(_) | S::DoublePrecision | S::Float8 | S::Float(_) | S::Float64 => {
            DataType::Float64
        }
        S::Numeric(info) | S::Decimal(info) | S::Dec(info) => match info {
            ExactNumberInfo::None => DataType::Decimal128(38, UNCONSTRAINED_NUMERIC_SCALE),
            ExactNumberInfo::Precision(p) => DataType::Decimal128((*p).min(38) as u8, 0),
            ExactNumberInfo::PrecisionAndScale(p, s) => {
                DataType::Decimal128((*p).min(38) as u8, *s as i8)
            }
        },
        S::Text
        | S::String(_)
        | S::Varchar(_)
        | S::CharVarying(_)
        | S::CharacterVarying(_)
        | S::Char(_)
        | S::Character(_)
        | S::Uuid
        | S::JSON
        | S::JSONB => DataType::Utf8,
        S::Bytea | S::Blob(_) | S::Binary(_) | S::Varbinary(_) => DataType::Binary,
        S::Date => DataType::Date32,
        S::Timestamp(_, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
        }
        S::Timestamp(_, _) | S::Datetime(_) => DataType::Timestamp(TimeUnit::Microsecond, None),
        S::Interval { .. } => DataType::Interval(IntervalUnit::MonthDayNano),
        // `int[]`, `int[3]` (PostgreSQL ignores the size), `ARRAY<int>`:
        // one-dimensional arrays, as DataFusion plans `ARRAY[...]`.
        S::Array(
            ArrayElemTypeDef::SquareBracket(inner, _) | ArrayElemTypeDef::AngleBracket(inner),
        ) => DataType::List(Arc::new(Field::new_list_field(to_arrow(inner)?, true))),
        // ksqlDB's STRUCT<…> and MAP<…> (fields named as identifiers
        // are: unquoted ones lower-case).
        S::Struct(fields, _) => DataType::Struct(
            fields
                .iter()
                .map(|f| {
                    let name = f
                        .field_name
                        .as_ref()
                        .map(|i| match i.quote_style {
                            Some(_) => i.value.clone(),
                            None => i.value.to_ascii_lowercase(),
                        })
                        .unwrap_or_default();
                    Ok(Field::new(name, to_arrow(&f.field_type)?, true))
                })
                .collect::<Result<Vec<_>, UnsupportedType>>()?
                .into(),
        ),
        S::Map(k, v) => DataType::Map(
            Arc::new(Field::new(
                "entries",
                DataType::Struct(
                    vec![
                        Field::new("key", to_arrow(k)?, false),
                        Field::new("value", to_arrow(v)?, true),
                    ]
                    .into(),
                ),
                false,
            )),
            false,
        ),
        S::Custom(name, _) => {
            let n = name.to_string().to_ascii_lowercase();
            match n.as_str() {
                "string" => DataType::Utf8,
                "timestamptz" => DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                "int" | "int4" => DataType::Int32,
                "int8" => DataType::Int64,
                _ => return Err(UnsupportedType(t.to_string())),
            }
        }
        other => return Err(UnsupportedType(other.to_string())),
    })
}
