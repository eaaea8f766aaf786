//! A frozen linear weight that stays compact (quantized) through the forward *and* the backward
//! pass.
//!
//! burn multiplies by a quantized weight by dequantizing it first, and autodiff keeps that dense
//! copy for the backward pass (`∂x = ∂y·Wᵀ` needs W): training over a quantized base held every
//! layer's weight in f32 once more, so QLoRA cost more memory than LoRA. This operation keeps
//! only the quantized weight for the backward pass and dequantizes it again there, one layer at
//! a time. The weight gets no gradient (it is frozen); the input does.
//!
//! burn's CPU backend stores a quantized value in a byte whatever its width, so 4 bits took as
//! much memory as 8. [`compact`] packs a 4-bit weight two values per byte, with f16 scales, on
//! that backend (WebGPU packs the values already); only this module reads such a weight, so every
//! dense view of a frozen weight goes through [`dequantize`], never burn's `Tensor::dequantize`.
//!
//! It is a burn backend extension: one trait whose default bodies (dequantize, multiply) serve
//! WebGPU, the CPU backend's own dequantization, and a handwritten autodiff implementation.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::flex::{FlexQTensor, FlexTensor};
use burn::backend::ops::QTensorOps;
use burn::backend::tensor::{FloatTensor, QuantizedTensor};
use burn::backend::TensorMetadata;
use burn::backend::{backend_extension, Autodiff, AutodiffBackend, Backend, Dispatch, Flex};
use burn::prelude::*;
use burn::tensor::quantization::{QuantScheme, QuantStore, QuantValue};
use burn::tensor::{f16, FloatDType};

#[backend_extension(Flex, Cube: cfg(feature = "webgpu"), Autodiff)]
pub trait FrozenOps: Backend {
    /// `x [n, in] · dequantize(w [in, out])`.
    fn frozen_matmul(x: FloatTensor<Self>, w: QuantizedTensor<Self>) -> FloatTensor<Self> {
        Self::float_matmul(x, Self::frozen_dequantize(w))
    }

    /// `dy [n, out] · dequantize(w [in, out])ᵀ`: the input's gradient.
    fn frozen_matmul_t(dy: FloatTensor<Self>, w: QuantizedTensor<Self>) -> FloatTensor<Self> {
        Self::float_matmul(dy, Self::float_transpose(Self::frozen_dequantize(w)))
    }

    /// `w` in f32.
    fn frozen_dequantize(w: QuantizedTensor<Self>) -> FloatTensor<Self> {
        Self::dequantize(w, FloatDType::F32)
    }

    /// `w` stored as compactly as this backend's [`FrozenOps`] can read it.
    fn frozen_compact(w: QuantizedTensor<Self>) -> QuantizedTensor<Self> {
        w
    }
}

impl FrozenOps for Flex {
    fn frozen_dequantize(w: QuantizedTensor<Self>) -> FloatTensor<Self> {
        flex_dequantize(w)
    }

    fn frozen_compact(w: QuantizedTensor<Self>) -> QuantizedTensor<Self> {
        flex_pack(w)
    }
}

/// A 4-bit weight packed by [`flex_pack`]: values `v` in −7..7 stored as `v + 8`, two to a byte
/// (the even index of each pair in the low nibble), then each block's scale as an f16 (GGUF's
/// Q4_0 stores 32 values the same way, in 18 bytes): 4.5 bits a value instead of 8 + 1. burn
/// has no CPU storage for this; the scheme says `PackedNative`, whose element size burn-flex
/// takes as zero, so any of its own operations reached by mistake fails loudly instead of
/// reading half a tensor.
fn is_packed(scheme: &QuantScheme) -> bool {
    scheme.value == QuantValue::Q4S && matches!(scheme.store, QuantStore::PackedNative(_))
}

/// Values per scale of `w` when its scales run along its rows (each row a whole number of
/// blocks, one scale for each), contiguous and without a per-tensor scale: how webtune
/// quantizes. `None` otherwise.
fn row_blocks(w: &FlexQTensor, scheme: &QuantScheme) -> Option<usize> {
    let shape = w.shape();
    let cols = shape[shape.num_dims() - 1];
    let block = scheme.block_size()?.to_dim_vec(shape.num_dims());
    let (last, rest) = block.split_last()?;
    let k = *last as usize;
    let along_rows = rest.iter().all(|&e| e == 1) && k > 0 && cols % k == 0;
    let two_level = scheme.block_scale().and(scheme.tensor_scale()).is_some();
    (along_rows && !two_level && w.tensor().is_contiguous()).then_some(k)
}

/// Runs `f` over `(out block, stored block, scale)` triples, on every core where there are some;
/// a block's scale is `scale_k` items of `scales`.
fn for_each_block<S: Sync, F>(
    out: &mut [f32],
    (k, stored, stored_k): (usize, &[i8], usize),
    (scales, scale_k): (&[S], usize),
    f: F,
) where
    F: Fn((&mut [f32], (&[i8], &[S]))) + Send + Sync,
{
    #[cfg(any(not(target_arch = "wasm32"), feature = "wasm-threads"))]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(k)
            .zip(stored.par_chunks(stored_k).zip(scales.par_chunks(scale_k)))
            .with_min_len(1024)
            .for_each(f);
    }
    #[cfg(all(target_arch = "wasm32", not(feature = "wasm-threads")))]
    out.chunks_mut(k)
        .zip(stored.chunks(stored_k).zip(scales.chunks(scale_k)))
        .for_each(f);
}

/// The CPU backend's dequantization goes element by element through a generic block lookup
/// (SmolLM2-135M QLoRA q8: 44% of a step in `BlockLayout::block_of`). A weight quantized in
/// blocks along its rows, as webtune quantizes, is a run of scales over runs of bytes (or of
/// half bytes, packed).
fn flex_dequantize(w: FlexQTensor) -> FloatTensor<Flex> {
    use burn::tensor::DType;

    let DType::QFloat(scheme) = w.dtype() else {
        unreachable!("a quantized tensor has a quantized dtype")
    };
    let Some(k) = row_blocks(&w, &scheme) else {
        assert!(!is_packed(&scheme), "a packed weight has row blocks");
        return Flex::dequantize(w, FloatDType::F32);
    };
    let shape = w.shape();
    let n = shape.num_elements();
    let values: &[i8] = w.tensor().storage();
    let mut out = vec![0f32; n];
    if is_packed(&scheme) {
        let (values, scales) = values.split_at(n / 2);
        for_each_block(
            &mut out,
            (k, values, k / 2),
            (scales, 2),
            |(out, (q, s))| {
                let s = f16::from_bits(u16::from_le_bytes([s[0] as u8, s[1] as u8])).to_f32();
                for (o, &b) in out.chunks_exact_mut(2).zip(q) {
                    let b = b as u8;
                    o[0] = ((b & 15) as i32 - 8) as f32 * s;
                    o[1] = ((b >> 4) as i32 - 8) as f32 * s;
                }
            },
        );
    } else {
        for_each_block(
            &mut out,
            (k, values, k),
            (w.scales(), 1),
            |(out, (q, s))| {
                for (o, &v) in out.iter_mut().zip(q) {
                    *o = v as f32 * s[0];
                }
            },
        );
    }
    FlexTensor::from_data(burn::tensor::TensorData::new(out, shape))
}

/// A 4-bit weight with an even number of values per block, two values to a byte and its scales
/// in f16 (see [`is_packed`]); any other weight as it is.
fn flex_pack(w: FlexQTensor) -> FlexQTensor {
    use burn::backend::flex::Layout;
    use burn::tensor::{Bytes, DType};

    let DType::QFloat(scheme) = w.dtype() else {
        unreachable!("a quantized tensor has a quantized dtype")
    };
    let packable = scheme.value == QuantValue::Q4S && scheme.store == QuantStore::Native;
    match row_blocks(&w, &scheme) {
        Some(k) if packable && k % 2 == 0 => {}
        _ => return w,
    }
    let values: &[i8] = w.tensor().storage();
    // Exactly the bytes it holds: a vector grown past its size would keep the slack.
    let mut packed = Vec::with_capacity(values.len() / 2 + 2 * w.scales().len());
    packed.extend(
        values
            .chunks_exact(2)
            .map(|p| ((p[0] + 8) as u8 | ((p[1] + 8) as u8) << 4) as i8),
    );
    for &s in w.scales() {
        packed.extend(f16::from_f32(s).to_bits().to_le_bytes().map(|b| b as i8));
    }
    let tensor = FlexTensor::new(
        Bytes::from_elems(packed),
        Layout::contiguous(w.shape()),
        DType::I8,
    );
    let scheme = scheme.with_store(QuantStore::PackedNative(0));
    // The scales live in the bytes; burn's type asks for at least one here.
    FlexQTensor::new(tensor, scheme, vec![0.0], None)
}

#[cfg(feature = "webgpu")]
impl FrozenOps for burn::backend::Cube {}

impl<B: Backend + FrozenOps, C: CheckpointStrategy> FrozenOps for Autodiff<B, C> {
    fn frozen_matmul(x: FloatTensor<Self>, w: QuantizedTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct FrozenMatmul;

        impl<B: Backend + FrozenOps> Backward<B, 1> for FrozenMatmul {
            /// The quantized weight.
            type State = QuantizedTensor<B>;

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let w = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |grad| {
                    B::frozen_matmul_t(grad, w)
                });
            }
        }

        let (x, node) = x.into_parts();
        match FrozenMatmul.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(w.clone(), B::frozen_matmul(x, w)),
            OpsKind::UnTracked(prep) => prep.finish(B::frozen_matmul(x, w)),
        }
    }

    /// A frozen weight is a constant: its dense form is a leaf that takes no gradient.
    fn frozen_dequantize(w: QuantizedTensor<Self>) -> FloatTensor<Self> {
        <Self as AutodiffBackend>::from_inner(B::frozen_dequantize(w))
    }

    fn frozen_compact(w: QuantizedTensor<Self>) -> QuantizedTensor<Self> {
        B::frozen_compact(w)
    }
}

/// `w` in f32: a frozen weight's dense form (a packed weight has no other reader).
pub fn dequantize<const D: usize>(w: Tensor<D>) -> Tensor<D> {
    if !is_quantized(&w) {
        return w;
    }
    Tensor::from_dispatch(<Dispatch as FrozenOps>::frozen_dequantize(
        w.into_dispatch(),
    ))
}

/// A quantized `w` stored as compactly as this backend can multiply it (on the CPU 4-bit values
/// two to a byte, scales in f16); any other `w` as it is.
pub fn compact<const D: usize>(w: Tensor<D>) -> Tensor<D> {
    if !is_quantized(&w) {
        return w;
    }
    Tensor::from_dispatch(<Dispatch as FrozenOps>::frozen_compact(w.into_dispatch()))
}

/// Whether `w` is stored quantized.
pub fn is_quantized<const D: usize>(w: &Tensor<D>) -> bool {
    matches!(w.dtype(), burn::tensor::DType::QFloat(_))
}

/// `x [n, in] · w [in, out]` where `w` is frozen: a quantized `w` stays quantized for the
/// backward pass (see the module's notes); any other `w` is an ordinary product.
pub fn frozen_matmul(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    if !is_quantized(&w) {
        return x.matmul(w);
    }
    Tensor::from_dispatch(<Dispatch as FrozenOps>::frozen_matmul(
        x.into_dispatch(),
        w.into_dispatch(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::train::qlora::BaseQuant;
    use burn::tensor::TensorData;

    fn close(a: Tensor<2>, b: Tensor<2>) {
        let (a, b) = (
            a.into_data().try_to_vec::<f32>().unwrap(),
            b.into_data().try_to_vec::<f32>().unwrap(),
        );
        assert!(b.iter().any(|v| v.abs() > 1e-3));
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    fn store(w: &Tensor<2>) -> QuantStore {
        match w.dtype() {
            burn::tensor::DType::QFloat(scheme) => scheme.store,
            other => panic!("not quantized: {other:?}"),
        }
    }

    /// A weight stored as burn stores it or [`compact`]ed (4-bit values two to a byte, f16
    /// scales) dequantizes to burn's values (exactly, or within the scales' f16 rounding);
    /// forward and the input's gradient equal a product with that dense weight; the weight
    /// gets no gradient; evaluation (no autodiff) gives the same product.
    #[test]
    fn a_quantized_weight_multiplies_as_its_dequantized_self() {
        let device = Device::flex().autodiff();
        let mut rng = Rng::new(3);
        let (n, k, m) = (5, 64, 96);
        for (quant, block, packs) in [
            (BaseQuant::Q8, 32, false),
            (BaseQuant::Q4, 32, true),
            // A 4-bit block of odd length stays a byte a value.
            (BaseQuant::Q4, 3, false),
        ] {
            let stored = Tensor::<2>::from_data(
                TensorData::new(rng.normal_vec(k * m, 0.1), [k, m]),
                &device,
            )
            .quantize_dynamic(&quant.scheme(&device, block));
            let w = compact(stored.clone());
            let packed = matches!(store(&w), QuantStore::PackedNative(_));
            assert_eq!(packed, packs, "{quant:?} in blocks of {block}");
            // The values burn's own dequantization gives: bit for bit, or packed within the
            // rounding of the scale to f16 (2⁻¹¹ relative).
            let dense = dequantize(w.clone());
            let ours = dense.clone().into_data().try_to_vec::<f32>().unwrap();
            let burns = stored.dequantize().into_data().try_to_vec::<f32>().unwrap();
            for (a, b) in ours.iter().zip(&burns) {
                let bound = if packed { b.abs() / 2048.0 } else { 0.0 };
                assert!((a - b).abs() <= bound, "{a} vs {b}");
            }
            let x_values = rng.normal_vec(n * k, 1.0);
            let x = || {
                Tensor::<2>::from_data(TensorData::new(x_values.clone(), [n, k]), &device)
                    .require_grad()
            };
            let (x1, x2) = (x(), x());
            let y1 = frozen_matmul(x1.clone(), w.clone());
            let y2 = x2.clone().matmul(dense);
            // A weighted sum, so that the gradient is not the same for every output.
            let weights = Tensor::<2>::from_data(
                TensorData::new(rng.normal_vec(n * m, 1.0), [n, m]),
                &device,
            );
            let g1 = (y1.clone() * weights.clone()).sum().backward();
            let g2 = (y2.clone() * weights).sum().backward();
            close(y1, y2.clone());
            close(x1.grad(&g1).unwrap(), x2.grad(&g2).unwrap());
            assert!(w.grad(&g1).is_none());
            let inference = frozen_matmul(x().inner(), w.clone().inner());
            close(inference, y2.inner());
        }
    }
}
