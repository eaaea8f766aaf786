//! Dequantisation: raw bytes of whole ggml blocks (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
//! Q4_K, Q5_K, Q6_K) to f32 values.

use super::reader::GgmlType;

fn f16(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// 6-bit scale and min `j` (0..8) of a Q4_K/Q5_K super-block's 12 packed bytes.
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    let (sc, m) = if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    };
    (sc as f32, m as f32)
}

/// Raw bytes of whole blocks → f32 values. The caller guarantees `data` holds whole blocks.
pub fn dequantize(dtype: GgmlType, data: &[u8]) -> Vec<f32> {
    let (block, size) = dtype.block();
    let mut out = Vec::with_capacity(data.len() / size * block);
    for b in data.chunks_exact(size) {
        match dtype {
            GgmlType::F32 => out.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            GgmlType::F16 => out.push(f16(b)),
            GgmlType::Bf16 => out.push(half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            GgmlType::Q8_0 => {
                let d = f16(b);
                out.extend(b[2..34].iter().map(|&q| q as i8 as f32 * d));
            }
            GgmlType::Q4_0 => {
                let (d, qs) = (f16(b), &b[2..18]);
                out.extend(qs.iter().map(|&q| ((q & 0x0F) as i32 - 8) as f32 * d));
                out.extend(qs.iter().map(|&q| ((q >> 4) as i32 - 8) as f32 * d));
            }
            GgmlType::Q4_1 => {
                let (d, m, qs) = (f16(b), f16(&b[2..]), &b[4..20]);
                out.extend(qs.iter().map(|&q| (q & 0x0F) as f32 * d + m));
                out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
            }
            GgmlType::Q5_0 | GgmlType::Q5_1 => {
                let (d, m, rest) = if dtype == GgmlType::Q5_0 {
                    (f16(b), None, &b[2..])
                } else {
                    (f16(b), Some(f16(&b[2..])), &b[4..])
                };
                let qh = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
                let qs = &rest[4..20];
                for j in 0..32 {
                    let low = if j < 16 {
                        qs[j] & 0x0F
                    } else {
                        qs[j - 16] >> 4
                    };
                    let q = (low as u32 | (((qh >> j) & 1) << 4)) as f32;
                    out.push(match m {
                        None => (q - 16.0) * d,
                        Some(m) => q * d + m,
                    });
                }
            }
            GgmlType::Q4K | GgmlType::Q5K => {
                let (d, dmin, scales) = (f16(b), f16(&b[2..]), &b[4..16]);
                let (qh, qs) = if dtype == GgmlType::Q5K {
                    (Some(&b[16..48]), &b[48..176])
                } else {
                    (None, &b[16..144])
                };
                for s in 0..8 {
                    let (sc, m) = scale_min_k4(s, scales);
                    let chunk = &qs[(s / 2) * 32..(s / 2) * 32 + 32];
                    for (l, &byte) in chunk.iter().enumerate() {
                        let mut q = if s % 2 == 0 { byte & 0x0F } else { byte >> 4 };
                        if let Some(qh) = qh {
                            q |= ((qh[l] >> s) & 1) << 4;
                        }
                        out.push(d * sc * q as f32 - dmin * m);
                    }
                }
            }
            GgmlType::Q6K => {
                let (ql, qh, scales, d) = (&b[..128], &b[128..192], &b[192..208], f16(&b[208..]));
                let mut y = [0f32; 256];
                for n in 0..2 {
                    let (ql, qh) = (&ql[n * 64..], &qh[n * 32..]);
                    for l in 0..32 {
                        let q = [
                            (ql[l] & 0x0F) | ((qh[l] & 3) << 4),
                            (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4),
                            (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                            (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
                        ];
                        for (k, q) in q.into_iter().enumerate() {
                            let i = n * 128 + k * 32 + l;
                            y[i] = d * (scales[i / 16] as i8 as f32) * (q as i32 - 32) as f32;
                        }
                    }
                }
                out.extend_from_slice(&y);
            }
        }
    }
    out
}
