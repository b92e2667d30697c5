//! The routes' example vectors and the similarity search over them.

/// The largest vector accepted (bounds a VM's memory and a configure-time sidecar call).
pub const MAX_DIMENSION: usize = 4096;

/// Example vectors, L2-normalised, in one flat buffer (`dim` floats per row).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Index {
    dim: usize,
    data: Vec<f32>,
    route: Vec<usize>,
}

impl Index {
    pub fn len(&self) -> usize {
        self.route.len()
    }

    pub fn is_empty(&self) -> bool {
        self.route.is_empty()
    }

    pub fn dimension(&self) -> usize {
        self.dim
    }

    /// Adds one example of `route`, normalised. The first vector fixes the dimension.
    pub fn push(&mut self, route: usize, v: &[f32]) -> Result<(), String> {
        if v.is_empty() || v.len() > MAX_DIMENSION {
            return Err(format!(
                "a vector needs 1..={} values, not {}",
                MAX_DIMENSION,
                v.len()
            ));
        }
        if self.dim != 0 && v.len() != self.dim {
            return Err(format!("{} values; the other vectors have {}", v.len(), self.dim));
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err("values must be finite numbers".to_owned());
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm < 1e-6 {
            return Err("the zero vector has no direction".to_owned());
        }
        self.dim = v.len();
        self.data.extend(v.iter().map(|x| x / norm));
        self.route.push(route);
        Ok(())
    }

    /// Each route's score for `q` (a normalised vector): the mean of its `k` most similar examples
    /// (`k` = 1: the nearest one). Routes without examples score `f32::NEG_INFINITY`. `scratch` holds
    /// `routes × k` similarities between calls. `None` when `q` has another dimension.
    pub fn scores(
        &self,
        q: &[f32],
        routes: usize,
        k: usize,
        scratch: &mut Vec<f32>,
        out: &mut Vec<f32>,
    ) -> Option<()> {
        if q.len() != self.dim || self.dim == 0 || k == 0 {
            return None;
        }
        scratch.clear();
        scratch.resize(routes * k, f32::NEG_INFINITY);
        for (row, &r) in self.data.chunks_exact(self.dim).zip(&self.route) {
            let s: f32 = row.iter().zip(q).map(|(a, b)| a * b).sum();
            // This route's top k, best first: insert `s` where it belongs, dropping the last.
            let Some(top) = scratch.get_mut(r * k..(r + 1) * k) else {
                continue;
            };
            if let Some(pos) = top.iter().position(|&t| s > t) {
                top[pos..].rotate_right(1);
                top[pos] = s;
            }
        }
        out.clear();
        out.extend(scratch.chunks_exact(k).map(|top| {
            let (sum, n) = top
                .iter()
                .filter(|t| t.is_finite())
                .fold((0.0f32, 0u32), |(sum, n), t| (sum + t, n + 1));
            if n == 0 { f32::NEG_INFINITY } else { sum / n as f32 }
        }));
        Some(())
    }
}
