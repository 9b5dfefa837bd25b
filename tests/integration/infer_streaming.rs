//! Inference reads only what the contract needs: a model with gigabytes of weights is answered
//! after reading a few kilobytes, without the weights ever being read or held in memory.

use mlambda::contract::{DataType, Field, Shape};
use mlambda::infer::{infer_onnx_reader, infer_savedmodel_reader};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// A file made of `head`, `gap` zero bytes, and `tail`, that counts the bytes read from it.
/// Nothing is allocated for the gap, so it can stand for weights of any size.
struct Sparse {
    head: Vec<u8>,
    gap: u64,
    tail: Vec<u8>,
    pos: u64,
    read: u64,
}

impl Sparse {
    fn new(head: Vec<u8>, gap: u64, tail: Vec<u8>) -> Self {
        Sparse {
            head,
            gap,
            tail,
            pos: 0,
            read: 0,
        }
    }

    fn len(&self) -> u64 {
        self.head.len() as u64 + self.gap + self.tail.len() as u64
    }
}

impl Read for Sparse {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let head = self.head.len() as u64;
        let n = if self.pos < head {
            let from = &self.head[self.pos as usize..];
            let n = from.len().min(buf.len());
            buf[..n].copy_from_slice(&from[..n]);
            n
        } else if self.pos < head + self.gap {
            let n = (head + self.gap - self.pos).min(buf.len() as u64) as usize;
            buf[..n].fill(0);
            n
        } else {
            let at = (self.pos - head - self.gap) as usize;
            let from = self.tail.get(at..).unwrap_or_default();
            let n = from.len().min(buf.len());
            buf[..n].copy_from_slice(&from[..n]);
            n
        };
        self.pos += n as u64;
        self.read += n as u64;
        Ok(n)
    }
}

impl Seek for Sparse {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek"))?;
        Ok(self.pos)
    }
}

fn varint(mut value: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A length-delimited field: key and length; the payload follows.
fn header(number: u32, len: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint(u64::from(number) << 3 | 2, &mut out);
    varint(len, &mut out);
    out
}

fn message(number: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = header(number, payload.len() as u64);
    out.extend_from_slice(payload);
    out
}

fn varint_field(number: u32, value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint(u64::from(number) << 3, &mut out);
    varint(value, &mut out);
    out
}

const WEIGHTS: u64 = 8 << 30;

#[test]
fn onnx_weights_are_skipped_not_read() {
    // ValueInfoProto { name, type { tensor_type { elem_type: FLOAT, shape { dim { 3 } } } } }
    let value_info = |name: &str| {
        let dim = message(1, &varint_field(1, 3));
        let shape = message(2, &dim);
        let tensor = [varint_field(1, 1), shape].concat();
        let r#type = message(1, &tensor);
        [message(1, name.as_bytes()), message(2, &r#type)].concat()
    };
    // graph { initializer { name: "w", raw_data: <8 GiB> }, input x, input w, output y }
    let name = message(8, b"w");
    let raw = header(9, WEIGHTS);
    let initializer_len = (name.len() + raw.len()) as u64 + WEIGHTS;
    let initializer_head = [header(5, initializer_len), name, raw].concat();
    let graph_tail = [
        message(11, &value_info("x")),
        message(11, &value_info("w")),
        message(12, &value_info("y")),
    ]
    .concat();
    let graph_len = initializer_head.len() as u64 + WEIGHTS + graph_tail.len() as u64;
    let head = [
        message(8, &varint_field(2, 17)), // opset_import { version: 17 }
        header(7, graph_len),
        initializer_head,
    ]
    .concat();
    let mut file = Sparse::new(head, WEIGHTS, graph_tail);

    let inferred = infer_onnx_reader(&mut file, Path::new("big.onnx")).expect("infers");
    assert_eq!(inferred.model_type, "onnx:17");
    let float3 = |name| Field::tensor(name, DataType::DtFloat, Some(Shape::from_sizes(&[3])));
    assert_eq!(inferred.signatures[0].inputs, vec![float3("x")]);
    assert_eq!(inferred.signatures[0].outputs, vec![float3("y")]);
    assert!(
        file.read < 1 << 20,
        "read {} bytes of {}",
        file.read,
        file.len()
    );
}

#[test]
fn saved_model_graph_is_skipped_not_read() {
    // TensorInfo { name: "x:0", dtype: DT_INT64, tensor_shape { dim { size: -1 } } }
    let dim = message(2, &varint_field(1, u64::MAX));
    let info = [message(1, b"x:0"), varint_field(2, 9), message(3, &dim)].concat();
    let entry = |key: &str, value: &[u8]| [message(1, key.as_bytes()), message(2, value)].concat();
    let signature = [
        message(1, &entry("x", &info)),
        message(2, &entry("y", &info)),
    ]
    .concat();
    let info_def = [message(4, b"serve"), message(5, b"2.4.0")].concat();
    let graph_tail = message(5, &entry("serving_default", &signature));
    let meta_head = [message(1, &info_def), header(2, WEIGHTS)].concat();
    let meta_len = meta_head.len() as u64 + WEIGHTS + graph_tail.len() as u64;
    let head = [varint_field(1, 1), header(2, meta_len), meta_head].concat();
    let mut file = Sparse::new(head, WEIGHTS, graph_tail);

    let inferred = infer_savedmodel_reader(&mut file, Path::new("saved_model.pb")).expect("infers");
    assert_eq!(inferred.model_type, "tensorflow:2.4.0");
    let int64 = |name| Field::tensor(name, DataType::DtInt64, Some(Shape::from_sizes(&[-1])));
    assert_eq!(inferred.signatures[0].name, "serving_default");
    assert_eq!(inferred.signatures[0].inputs, vec![int64("x")]);
    assert_eq!(inferred.signatures[0].outputs, vec![int64("y")]);
    assert!(
        file.read < 1 << 20,
        "read {} bytes of {}",
        file.read,
        file.len()
    );
}
