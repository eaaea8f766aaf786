//! `silu(g) · u`, the gated MLP of Llama-family models, as one operation that keeps only its two
//! inputs for the backward pass.
//!
//! Written with burn's tensor ops, `g · sigmoid(g) · u` keeps four `[tokens, ffn]` tensors for
//! autodiff (g, sigmoid(g), silu(g), u): for Qwen2.5-0.5B at 1 × 128 that is 240 MB of a 1.5 GB
//! QLoRA step, more than half the activations. The backward needs only g and u:
//! `∂u = ∂y · silu(g)`, `∂g = ∂y · u · σ(g) · (1 + g · (1 − σ(g)))`.
//!
//! A burn backend extension like [`super::frozen`]: a default body of tensor ops (WebGPU), one
//! pass over the values on the CPU backend, and a handwritten autodiff implementation.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::{ActivationOps, FloatTensorOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::TensorMetadata;
use burn::backend::{backend_extension, Autodiff, Backend, Dispatch, Flex};
use burn::prelude::*;

#[backend_extension(Flex, Cube: cfg(feature = "webgpu"), Autodiff)]
pub trait SwigluOps: Backend {
    /// `silu(g) · u`, element-wise.
    fn swiglu(g: FloatTensor<Self>, u: FloatTensor<Self>) -> FloatTensor<Self> {
        let silu = Self::float_mul(g.clone(), Self::sigmoid(g));
        Self::float_mul(silu, u)
    }

    /// The inputs' gradients `(∂g, ∂u)` given the output's `dy`.
    fn swiglu_backward(
        g: FloatTensor<Self>,
        u: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let sig = Self::sigmoid(g.clone());
        swiglu_backward_ops::<Self>(g, sig, u, dy)
    }
}

impl SwigluOps for Flex {
    fn swiglu(g: FloatTensor<Self>, u: FloatTensor<Self>) -> FloatTensor<Self> {
        let shape = g.shape();
        // The backend's sigmoid is vectorized (a scalar `exp` per value made this op slower
        // than the unfused one at 1.7B); the products then take one pass.
        let sig = Self::sigmoid(g.clone());
        let values = match (
            g.as_slice::<f32>(),
            u.as_slice::<f32>(),
            sig.as_slice::<f32>(),
        ) {
            (Some(gs), Some(us), Some(ss)) if gs.len() == us.len() && gs.len() == ss.len() => {
                let mut out = vec![0f32; gs.len()];
                for_chunks(&mut out, |start, out| {
                    let n = out.len();
                    let (gs, us, ss) = (
                        &gs[start..start + n],
                        &us[start..start + n],
                        &ss[start..start + n],
                    );
                    for i in 0..n {
                        out[i] = gs[i] * ss[i] * us[i];
                    }
                });
                out
            }
            _ => return Self::float_mul(Self::float_mul(g, sig), u),
        };
        flex_tensor(values, shape)
    }

    fn swiglu_backward(
        g: FloatTensor<Self>,
        u: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let shape = g.shape();
        let sig = Self::sigmoid(g.clone());
        let slices = (
            g.as_slice::<f32>(),
            u.as_slice::<f32>(),
            dy.as_slice::<f32>(),
            sig.as_slice::<f32>(),
        );
        let (Some(gs), Some(us), Some(dys), Some(ss)) = slices else {
            return swiglu_backward_ops::<Self>(g, sig, u, dy);
        };
        let n = gs.len();
        if us.len() != n || dys.len() != n || ss.len() != n {
            return swiglu_backward_ops::<Self>(g, sig, u, dy);
        }
        let (mut dg, mut du) = (vec![0f32; n], vec![0f32; n]);
        for_pairs(&mut dg, &mut du, |start, dg, du| {
            let m = dg.len();
            let (gs, us) = (&gs[start..start + m], &us[start..start + m]);
            let (dys, ss) = (&dys[start..start + m], &ss[start..start + m]);
            for i in 0..m {
                let (g, s, dy) = (gs[i], ss[i], dys[i]);
                du[i] = dy * g * s;
                dg[i] = dy * us[i] * s * (1.0 + g * (1.0 - s));
            }
        });
        (flex_tensor(dg, shape.clone()), flex_tensor(du, shape))
    }
}

/// The gradients in tensor ops, given `sig = σ(g)`: the default body, and the CPU backend's for
/// layouts its one-pass loop does not take.
fn swiglu_backward_ops<B: Backend>(
    g: FloatTensor<B>,
    sig: FloatTensor<B>,
    u: FloatTensor<B>,
    dy: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let silu = B::float_mul(g.clone(), sig.clone());
    let du = B::float_mul(dy.clone(), silu);
    // σ · (1 + g · (1 − σ))
    let one_minus = B::float_add_scalar(B::float_neg(sig.clone()), 1f32.into());
    let slope = B::float_mul(
        sig,
        B::float_add_scalar(B::float_mul(g, one_minus), 1f32.into()),
    );
    (B::float_mul(B::float_mul(dy, u), slope), du)
}

fn flex_tensor(values: Vec<f32>, shape: burn::tensor::Shape) -> FloatTensor<Flex> {
    burn::backend::flex::FlexTensor::from_data(burn::tensor::TensorData::new(values, shape))
}

/// Values per task on the CPU pool: small enough to spread a `[128, 4864]` activation over
/// every core, large enough to amortize the hand-off.
const CHUNK: usize = 1 << 14;

/// `f(start, chunk)` over `out` in chunks, on every core where there is a pool.
fn for_chunks(out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    #[cfg(any(not(target_arch = "wasm32"), feature = "wasm-threads"))]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(i, c)| f(i * CHUNK, c));
    }
    #[cfg(all(target_arch = "wasm32", not(feature = "wasm-threads")))]
    out.chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(i, c)| f(i * CHUNK, c));
}

/// [`for_chunks`] over two outputs of the same length at once.
fn for_pairs(
    a: &mut [f32],
    b: &mut [f32],
    f: impl Fn(usize, &mut [f32], &mut [f32]) + Sync + Send,
) {
    #[cfg(any(not(target_arch = "wasm32"), feature = "wasm-threads"))]
    {
        use rayon::prelude::*;
        a.par_chunks_mut(CHUNK)
            .zip(b.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(i, (a, b))| f(i * CHUNK, a, b));
    }
    #[cfg(all(target_arch = "wasm32", not(feature = "wasm-threads")))]
    a.chunks_mut(CHUNK)
        .zip(b.chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(i, (a, b))| f(i * CHUNK, a, b));
}

#[cfg(feature = "webgpu")]
impl SwigluOps for burn::backend::Cube {}

impl<B: Backend + SwigluOps, C: CheckpointStrategy> SwigluOps for Autodiff<B, C> {
    fn swiglu(g: FloatTensor<Self>, u: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct Swiglu;

        impl<B: Backend + SwigluOps> Backward<B, 2> for Swiglu {
            /// The two inputs.
            type State = (FloatTensor<B>, FloatTensor<B>);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let (g, u) = ops.state;
                let dy = grads.consume::<B>(&ops.node);
                let (dg, du) = B::swiglu_backward(g, u, dy);
                let [g_node, u_node] = ops.parents;
                if let Some(node) = g_node {
                    grads.register::<B>(node.id, dg);
                }
                if let Some(node) = u_node {
                    grads.register::<B>(node.id, du);
                }
            }
        }

        let (g, g_node) = g.into_parts();
        let (u, u_node) = u.into_parts();
        match Swiglu
            .prepare::<C>([g_node, u_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::swiglu(g.clone(), u.clone());
                prep.finish((g, u), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::swiglu(g, u)),
        }
    }
}

/// `silu(g) · u` (see the module's notes).
pub fn swiglu<const D: usize>(g: Tensor<D>, u: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as SwigluOps>::swiglu(
        g.into_dispatch(),
        u.into_dispatch(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use burn::tensor::activation::silu;
    use burn::tensor::TensorData;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    fn close(a: Vec<f32>, b: Vec<f32>) {
        assert_eq!(a.len(), b.len());
        assert!(b.iter().any(|v| v.abs() > 1e-3));
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    /// Output and both inputs' gradients equal burn's `silu(g) * u` with its autodiff, for a
    /// contiguous layout (the one-pass loop) and a transposed one (the tensor-op body), and
    /// without autodiff.
    #[test]
    fn one_op_is_silu_times_up_forward_and_backward() {
        let device = Device::flex().autodiff();
        let mut rng = Rng::new(5);
        let (n, m) = (7, 40_000); // more than one chunk of the CPU loop
        let data = |rng: &mut Rng, scale| rng.normal_vec(n * m, scale);
        let (gv, uv, wv) = (
            data(&mut rng, 3.0),
            data(&mut rng, 1.0),
            data(&mut rng, 1.0),
        );
        let t = |v: &Vec<f32>| Tensor::<2>::from_data(TensorData::new(v.clone(), [n, m]), &device);
        for transposed in [false, true] {
            let layout = |x: Tensor<2>| if transposed { x.transpose() } else { x };
            let (g1, u1, g2, u2) = (
                t(&gv).require_grad(),
                t(&uv).require_grad(),
                t(&gv).require_grad(),
                t(&uv).require_grad(),
            );
            let y1 = swiglu(layout(g1.clone()), layout(u1.clone()));
            let y2 = silu(layout(g2.clone())) * layout(u2.clone());
            // A weighted sum, so that each output's gradient differs.
            let w = layout(t(&wv));
            let grads1 = (y1.clone() * w.clone()).sum().backward();
            let grads2 = (y2.clone() * w).sum().backward();
            close(values(y1), values(y2.clone()));
            close(
                values(g1.grad(&grads1).unwrap()),
                values(g2.grad(&grads2).unwrap()),
            );
            close(
                values(u1.grad(&grads1).unwrap()),
                values(u2.grad(&grads2).unwrap()),
            );
            let inference = swiglu(layout(t(&gv)).inner(), layout(t(&uv)).inner());
            close(values(inference), values(y2.inner()));
        }
    }
}
