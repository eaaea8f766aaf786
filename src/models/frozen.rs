//! A frozen linear weight that stays compact (quantized) through the forward *and* the backward
//! pass.
//!
//! burn multiplies by a quantized weight by dequantizing it first, and autodiff keeps that dense
//! copy for the backward pass (`∂x = ∂y·Wᵀ` needs W): training over a quantized base held every
//! layer's weight in f32 once more, so QLoRA cost more memory than LoRA. This operation keeps
//! only the quantized weight for the backward pass and dequantizes it again there, one layer at
//! a time. The weight gets no gradient (it is frozen); the input does.
//!
//! It is a burn backend extension: one trait whose default body (dequantize, multiply) serves
//! the CPU backend and WebGPU, and a handwritten autodiff implementation.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::ops::{FloatTensorOps, QTensorOps};
use burn::backend::tensor::{FloatTensor, QuantizedTensor};
use burn::backend::TensorMetadata;
use burn::backend::{backend_extension, Autodiff, Backend, Dispatch, Flex};
use burn::prelude::*;
use burn::tensor::FloatDType;

#[backend_extension(Flex, Cube: cfg(feature = "webgpu"), Autodiff)]
pub trait FrozenOps: Backend {
    /// `x [n, in] · dequantize(w [in, out])`.
    fn frozen_matmul(x: FloatTensor<Self>, w: QuantizedTensor<Self>) -> FloatTensor<Self> {
        let dtype: FloatDType = x.dtype().into();
        Self::float_matmul(x, Self::dequantize(w, dtype))
    }

    /// `dy [n, out] · dequantize(w [in, out])ᵀ`: the input's gradient.
    fn frozen_matmul_t(dy: FloatTensor<Self>, w: QuantizedTensor<Self>) -> FloatTensor<Self> {
        let dtype: FloatDType = dy.dtype().into();
        Self::float_matmul(dy, Self::float_transpose(Self::dequantize(w, dtype)))
    }
}

impl FrozenOps for Flex {
    fn frozen_matmul(x: FloatTensor<Self>, w: QuantizedTensor<Self>) -> FloatTensor<Self> {
        Self::float_matmul(x, flex_dequantize(w))
    }

    fn frozen_matmul_t(dy: FloatTensor<Self>, w: QuantizedTensor<Self>) -> FloatTensor<Self> {
        Self::float_matmul(dy, Self::float_transpose(flex_dequantize(w)))
    }
}

/// The CPU backend's dequantization goes element by element through a generic block lookup
/// (SmolLM2-135M QLoRA q8: 44% of a step in `BlockLayout::block_of`). A weight quantized in
/// blocks along its rows, as webtune quantizes, is a run of scales over runs of bytes.
fn flex_dequantize(w: burn::backend::flex::FlexQTensor) -> FloatTensor<Flex> {
    use burn::backend::flex::FlexTensor;
    use burn::tensor::DType;

    let DType::QFloat(scheme) = w.dtype() else {
        unreachable!("a quantized tensor has a quantized dtype")
    };
    let shape = w.shape();
    let cols = shape[shape.num_dims() - 1];
    let block = scheme.block_size().map(|b| b.to_dim_vec(shape.num_dims()));
    let along_rows = block.as_ref().and_then(|b| {
        let (last, rest) = b.split_last()?;
        (rest.iter().all(|&e| e == 1) && *last > 0 && cols % *last as usize == 0)
            .then_some(*last as usize)
    });
    let two_level = scheme.block_scale().and(scheme.tensor_scale()).is_some();
    let (Some(k), false, true) = (along_rows, two_level, w.tensor().is_contiguous()) else {
        return Flex::dequantize(w, FloatDType::F32);
    };
    let values: &[i8] = w.tensor().storage();
    let scales = w.scales();
    let mut out = vec![0f32; values.len()];
    let expand = |(out, (q, &s)): (&mut [f32], (&[i8], &f32))| {
        for (o, &v) in out.iter_mut().zip(q) {
            *o = v as f32 * s;
        }
    };
    #[cfg(any(not(target_arch = "wasm32"), feature = "wasm-threads"))]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(k)
            .zip(values.par_chunks(k).zip(scales.par_iter()))
            .with_min_len(1024)
            .for_each(expand);
    }
    #[cfg(all(target_arch = "wasm32", not(feature = "wasm-threads")))]
    out.chunks_mut(k)
        .zip(values.chunks(k).zip(scales.iter()))
        .for_each(expand);
    FlexTensor::from_data(burn::tensor::TensorData::new(out, shape))
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

    /// Forward and the input's gradient equal a product with the dequantized weight; the
    /// weight gets no gradient; evaluation (no autodiff) gives the same product.
    #[test]
    fn a_quantized_weight_multiplies_as_its_dequantized_self() {
        let device = Device::flex().autodiff();
        let mut rng = Rng::new(3);
        let (n, k, m) = (5, 64, 96);
        for quant in [BaseQuant::Q8, BaseQuant::Q4] {
            let w = Tensor::<2>::from_data(
                TensorData::new(rng.normal_vec(k * m, 0.1), [k, m]),
                &device,
            )
            .quantize_dynamic(&quant.scheme(&device, 32));
            let x_values = rng.normal_vec(n * k, 1.0);
            let x = || {
                Tensor::<2>::from_data(TensorData::new(x_values.clone(), [n, k]), &device)
                    .require_grad()
            };
            let (x1, x2) = (x(), x());
            let y1 = frozen_matmul(x1.clone(), w.clone());
            let y2 = x2.clone().matmul(w.clone().dequantize());
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
