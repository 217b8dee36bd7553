//! The enricher's read of a raw record: everything but the Kubernetes objects.
//!
//! A raw record carries the normalised event and the whole Kubernetes object it came from
//! (metadata, labels, annotations, managed fields): two thirds of its bytes, kept on the raw
//! topic for consumers that want the object. The engine reads only the normalised part, yet the
//! generic reader built every string and map of the object, the biggest single cost of the
//! enricher's own work (BENCHMARKS.md, "Reading raw records without their Kubernetes object";
//! `enricher/examples/codec_bench.rs` measures it). This reader reads the
//! body in the schema's order and steps over the two objects without building them.
//!
//! It reads bodies written with the raw schema compiled into this build only; the codec checks
//! that (the writer's schema, fetched by id, has the same canonical form) and otherwise reads
//! through schema resolution. Either way the record has `core` and `events_v1` empty.
//! `enricher/tests/fast_codec.rs` compares it with the generic reader over the real dumps.

use std::collections::HashMap;
use std::sync::LazyLock;

use apache_avro::schema::{Name, Schema};

use crate::codec::CodecError;
use crate::raw::{EventObservation, Heartbeat, NormalizedEvent, RawKind, RawRecord, ResourceRef, WatchVerb};
use crate::schema::RAW_SCHEMA;

/// How to step over a value of some schema without building it.
#[derive(Debug)]
enum Skip {
    Nothing,
    /// A `boolean`, `float`, `double` or `fixed`: so many bytes.
    Bytes(usize),
    /// An `int`, `long` or `enum` (and their logical types): one varint.
    Varint,
    /// `bytes` or `string`: a length, then that many bytes.
    Sized,
    Record(Vec<Skip>),
    Union(Vec<Skip>),
    /// An array's items or a map's values (a map's keys are strings).
    Blocks {
        map: bool,
        item: Box<Skip>,
    },
}

/// The plans for the two objects of the raw schema's event observation, built once.
static OBJECT_SKIPS: LazyLock<Result<(Skip, Skip), String>> = LazyLock::new(|| {
    let mut names = HashMap::new();
    collect_names(&RAW_SCHEMA, &mut names);
    let field = |record: &Schema, name: &str| match record {
        Schema::Record(r) => r.fields.iter().find(|f| f.name == name).map(|f| f.schema.clone()),
        _ => None,
    };
    let event = field(&RAW_SCHEMA, "event").ok_or("no event field")?;
    let Schema::Union(u) = event else { return Err("event is not a union".into()) };
    let observation = u.variants().get(1).cloned().ok_or("event union has no record")?;
    let core = field(&observation, "core").ok_or("no core field")?;
    let v1 = field(&observation, "events_v1").ok_or("no events_v1 field")?;
    Ok((plan(&core, &names, 0)?, plan(&v1, &names, 0)?))
});

fn collect_names<'a>(schema: &'a Schema, names: &mut HashMap<Name, &'a Schema>) {
    match schema {
        Schema::Record(r) => {
            names.insert(r.name.clone(), schema);
            r.fields.iter().for_each(|f| collect_names(&f.schema, names));
        }
        Schema::Enum(e) => {
            names.insert(e.name.clone(), schema);
        }
        Schema::Fixed(f) => {
            names.insert(f.name.clone(), schema);
        }
        Schema::Union(u) => u.variants().iter().for_each(|v| collect_names(v, names)),
        Schema::Array(a) => collect_names(&a.items, names),
        Schema::Map(m) => collect_names(&m.types, names),
        _ => {}
    }
}

fn plan(schema: &Schema, names: &HashMap<Name, &Schema>, depth: usize) -> Result<Skip, String> {
    // The raw schema's objects nest a few levels; a recursive type would never end.
    if depth > 32 {
        return Err("schema nests too deep (recursive?)".into());
    }
    let next = |s: &Schema| plan(s, names, depth + 1);
    Ok(match schema {
        Schema::Null => Skip::Nothing,
        Schema::Boolean => Skip::Bytes(1),
        Schema::Float => Skip::Bytes(4),
        Schema::Double => Skip::Bytes(8),
        Schema::Fixed(f) | Schema::Duration(f) => Skip::Bytes(f.size),
        Schema::Int
        | Schema::Long
        | Schema::Enum(_)
        | Schema::Date
        | Schema::TimeMillis
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => Skip::Varint,
        Schema::Bytes | Schema::String | Schema::BigDecimal => Skip::Sized,
        Schema::Record(r) => Skip::Record(r.fields.iter().map(|f| next(&f.schema)).collect::<Result<_, _>>()?),
        Schema::Union(u) => Skip::Union(u.variants().iter().map(next).collect::<Result<_, _>>()?),
        Schema::Array(a) => Skip::Blocks { map: false, item: Box::new(next(&a.items)?) },
        Schema::Map(m) => Skip::Blocks { map: true, item: Box::new(next(&m.types)?) },
        Schema::Ref { name } => next(names.get(name).ok_or_else(|| format!("unknown type {name:?}"))?)?,
        other => return Err(format!("no skip plan for {other:?}")),
    })
}

/// A cursor over an Avro body. Every read checks what is left: a truncated or corrupt body is
/// an error, never a panic or an allocation of a length it merely claims.
struct Body<'a>(&'a [u8]);

fn bad(what: &str) -> CodecError {
    CodecError::Schema(format!("raw record body: {what}"))
}

impl<'a> Body<'a> {
    fn long(&mut self) -> Result<i64, CodecError> {
        let mut z: u64 = 0;
        for (i, &b) in self.0.iter().enumerate().take(10) {
            z |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.0 = &self.0[i + 1..];
                return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
            }
        }
        Err(bad("varint runs past the end or past 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if n > self.0.len() {
            return Err(bad("length past the end"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn len(&mut self) -> Result<usize, CodecError> {
        usize::try_from(self.long()?).map_err(|_| bad("negative length"))
    }

    fn string(&mut self) -> Result<String, CodecError> {
        let n = self.len()?;
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes).map(str::to_string).map_err(|_| bad("string is not UTF-8"))
    }

    /// A `["null", T]` union: the branch index, then T read by `read` if it is the second.
    fn nullable<T>(&mut self, read: impl FnOnce(&mut Self) -> Result<T, CodecError>) -> Result<Option<T>, CodecError> {
        match self.long()? {
            0 => Ok(None),
            1 => read(self).map(Some),
            i => Err(bad(&format!("union branch {i} of a two-branch union"))),
        }
    }

    fn opt_string(&mut self) -> Result<Option<String>, CodecError> {
        self.nullable(Self::string)
    }

    fn opt_long(&mut self) -> Result<Option<i64>, CodecError> {
        self.nullable(Self::long)
    }

    fn symbol(&mut self, count: i64) -> Result<i64, CodecError> {
        let i = self.long()?;
        if (0..count).contains(&i) {
            Ok(i)
        } else {
            Err(bad(&format!("enum symbol {i} of {count}")))
        }
    }

    fn skip(&mut self, plan: &Skip) -> Result<(), CodecError> {
        match plan {
            Skip::Nothing => {}
            Skip::Bytes(n) => {
                self.take(*n)?;
            }
            Skip::Varint => {
                self.long()?;
            }
            Skip::Sized => {
                let n = self.len()?;
                self.take(n)?;
            }
            Skip::Record(fields) => fields.iter().try_for_each(|f| self.skip(f))?,
            Skip::Union(branches) => {
                let i = self.long()?;
                let branch = usize::try_from(i).ok().and_then(|i| branches.get(i));
                self.skip(branch.ok_or_else(|| bad(&format!("union branch {i} of {}", branches.len())))?)?;
            }
            Skip::Blocks { map, item } => loop {
                let count = self.long()?;
                if count == 0 {
                    break;
                }
                if count < 0 {
                    // A negative count is followed by the block's size in bytes.
                    self.long()?;
                }
                for _ in 0..count.unsigned_abs() {
                    if *map {
                        self.skip(&Skip::Sized)?;
                    }
                    self.skip(item)?;
                }
            },
        }
        Ok(())
    }

    fn resource_ref(&mut self) -> Result<Option<ResourceRef>, CodecError> {
        self.nullable(|b| {
            Ok(ResourceRef {
                kind: b.opt_string()?,
                namespace: b.opt_string()?,
                name: b.opt_string()?,
                uid: b.opt_string()?,
                api_version: b.opt_string()?,
                field_path: b.opt_string()?,
            })
        })
    }

    fn normalized(&mut self) -> Result<NormalizedEvent, CodecError> {
        Ok(NormalizedEvent {
            event_time: self.long()?,
            first_time: self.opt_long()?,
            type_: self.opt_string()?,
            reason: self.opt_string()?,
            note: self.opt_string()?,
            action: self.opt_string()?,
            regarding: self.resource_ref()?,
            related: self.resource_ref()?,
            reporting_controller: self.opt_string()?,
            reporting_instance: self.opt_string()?,
            host: self.opt_string()?,
            count: self.long()?,
        })
    }

    fn observation(&mut self, skips: &(Skip, Skip)) -> Result<EventObservation, CodecError> {
        let verb = match self.symbol(4)? {
            0 => WatchVerb::Added,
            1 => WatchVerb::Modified,
            2 => WatchVerb::Deleted,
            _ => WatchVerb::Unknown,
        };
        let o = EventObservation {
            verb,
            uid: self.string()?,
            resource_version: self.string()?,
            namespace: self.opt_string()?,
            name: self.string()?,
            api_version: self.string()?,
            new_occurrences: self.long()?,
            observed_at: self.long()?,
            normalized: self.normalized()?,
            core: None,
            events_v1: None,
        };
        self.skip(&skips.0)?;
        self.skip(&skips.1)?;
        Ok(o)
    }

    fn heartbeat(&mut self) -> Result<Heartbeat, CodecError> {
        Ok(Heartbeat {
            producer_time: self.long()?,
            event_time_high: self.opt_long()?,
            resource_version: self.opt_string()?,
            source: self.string()?,
            producer_id: self.string()?,
            recovery_offset: self.opt_long()?,
        })
    }
}

/// Reads a raw record body written with this build's raw schema, leaving out the Kubernetes
/// objects (`core` and `events_v1` are `None`).
pub fn decode_raw_lean(body: &[u8]) -> Result<RawRecord, CodecError> {
    let skips = OBJECT_SKIPS.as_ref().map_err(|e| CodecError::Schema(format!("raw schema skip plan: {e}")))?;
    let mut b = Body(body);
    let cluster = b.string()?;
    let kind = match b.symbol(3)? {
        0 => RawKind::Event,
        1 => RawKind::Heartbeat,
        _ => RawKind::Unknown,
    };
    let event = b.nullable(|b| b.observation(skips))?;
    let heartbeat = b.nullable(Body::heartbeat)?;
    if !b.0.is_empty() {
        return Err(CodecError::Schema(format!("{} bytes left after the record", b.0.len())));
    }
    Ok(RawRecord { cluster, kind, event, heartbeat })
}
