//! Walking a model's parameters with their dotted burn paths (`blocks.0.c_attn.weight`, or
//! `….weight.lora.a` inside a LoRA-adapted parameter): checkpoints, export, LoRA, QLoRA and
//! freezing all choose parameters by path. burn's visitors only announce entering and leaving
//! each module; [`Paths`] keeps the path so the walkers do not each keep their own.

use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;

/// Changes parameters, knowing where each one is.
pub trait MapAt {
    fn map_at<const D: usize>(&mut self, path: &str, param: Param<Tensor<D>>) -> Param<Tensor<D>>;
}

/// Reads parameters, knowing where each one is.
pub trait VisitAt {
    fn visit_at<const D: usize>(&mut self, path: &str, param: &Param<Tensor<D>>);
}

/// A [`MapAt`] or [`VisitAt`] as burn's mapper or visitor: `model.map(&mut Paths::new(m))`.
pub struct Paths<T> {
    pub inner: T,
    path: Vec<String>,
}

impl<T> Paths<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            path: Vec::new(),
        }
    }
}

impl<T: MapAt> ModuleMapper for Paths<T> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        self.inner.map_at(&self.path.join("."), param)
    }
}

impl<T: VisitAt> ModuleVisitor for Paths<T> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.inner.visit_at(&self.path.join("."), param)
    }
}
