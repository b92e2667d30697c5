//! Random-hyperplane LSH for the semantic cache in Redis: each of `tables` hashes a vector to a
//! `bits`-bit bucket (one bit per hyperplane: which side the vector is on). Similar vectors share a
//! bucket with high probability; a lookup probes each table's bucket and its 1-bit neighbours, so it
//! reads a small fraction of the entries instead of all of them. The hyperplanes come from a fixed
//! seed, so every sidecar computes the same buckets.

#[derive(Debug, Clone)]
pub struct Lsh {
    pub tables: usize,
    pub bits: usize,
    dim: usize,
    /// tables × bits hyperplanes of `dim` floats, row-major.
    planes: Vec<f32>,
}

impl Lsh {
    pub fn new(dim: usize, tables: usize, bits: usize, seed: u64) -> Self {
        let mut rng = seed;
        let mut next = || {
            rng = rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        };
        // Gaussian components (Box–Muller) make the hyperplane directions uniform on the sphere.
        let planes = (0..tables * bits * dim)
            .map(|_| {
                let (u1, u2) = (next().max(f64::MIN_POSITIVE), next());
                ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
            })
            .collect();
        Self {
            tables,
            bits,
            dim,
            planes,
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The bucket of `v` in each table.
    pub fn buckets(&self, v: &[f32]) -> Vec<u32> {
        (0..self.tables)
            .map(|t| {
                (0..self.bits).fold(0u32, |acc, b| {
                    let off = (t * self.bits + b) * self.dim;
                    let plane = self.planes.get(off..off + self.dim).unwrap_or_default();
                    let dot: f32 = plane.iter().zip(v).map(|(p, x)| p * x).sum();
                    acc | (u32::from(dot >= 0.0) << b)
                })
            })
            .collect()
    }

    /// `(table, bucket)` pairs to read for a lookup: each table's bucket and its 1-bit neighbours.
    pub fn probes(&self, v: &[f32]) -> Vec<(usize, u32)> {
        let mut out = Vec::with_capacity(self.tables * (self.bits + 1));
        for (t, b) in self.buckets(v).into_iter().enumerate() {
            out.push((t, b));
            out.extend((0..self.bits).map(|i| (t, b ^ (1 << i))));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: Vec<f32>) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    #[test]
    fn same_seed_same_buckets_and_near_vectors_are_probed() {
        let a = Lsh::new(8, 4, 10, 7);
        let b = Lsh::new(8, 4, 10, 7);
        let v = unit(vec![1.0, 0.2, -0.3, 0.5, 0.0, 0.1, 0.9, -0.4]);
        assert_eq!(a.buckets(&v), b.buckets(&v));
        let near = unit(
            v.iter()
                .enumerate()
                .map(|(i, x)| x + if i == 0 { 0.05 } else { 0.0 })
                .collect(),
        );
        let probes = a.probes(&v);
        let found = a
            .buckets(&near)
            .into_iter()
            .enumerate()
            .any(|(t, bk)| probes.contains(&(t, bk)));
        assert!(found);
        assert_eq!(probes.len(), 4 * 11);
    }
}
