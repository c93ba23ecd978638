using IlgpuLlama.Kernels.Reference;

namespace IlgpuLlama.Kernels.Bench;

/// <summary>The matvec family's validated benchmark cases (each launch checked against <see cref="KernelReference"/>).</summary>
sealed class MatVecBenchCases : FamilyBenchCases
{
    public override string Family => MatVecKernels.Family;

    public override IEnumerable<BenchCase> BenchCases(BenchShapes s, SixteenBitFormat f) => Cases(s, f);

    /// <summary>The same cases with Q8_0/Q4_0 matrices: bytes moved are the quants and scales actually read.</summary>
    public override IEnumerable<BenchCase> BlockBenchCases(BenchShapes s, BlockQuantFormat f) => Cases(s.WithWholeBlocks(f.BlockSize), f);

    static IEnumerable<BenchCase> Cases(BenchShapes s, WeightFormat f)
    {
        foreach (int b in new[] { 1, 4 })
        {
            yield return MatVec(f, "q/o proj", s.Hidden, s.Hidden, b, false, false);
            yield return MatVec(f, "k/v proj", s.KvDim, s.Hidden, b, false, false);
            yield return SwiGlu(f, s.Intermediate, s.Hidden, b, false);
            yield return MatVec(f, "down proj +=", s.Hidden, s.Intermediate, b, true, false);
            yield return MatVec(f, "lm head", s.Vocab, s.Hidden, b, false, false);
            yield return QkvRope(f, s, b, false);
            // The versions with the RMSNorm of their input fused, as the fused-norm decode variant launches them.
            yield return QkvRope(f, s, b, true);
            yield return SwiGlu(f, s.Intermediate, s.Hidden, b, true);
            yield return MatVec(f, "lm head", s.Vocab, s.Hidden, b, false, true);
        }
    }

    /// <summary>Epsilon of the fused-norm cases (Llama 3's).</summary>
    const float Eps = 1e-5f;

    /// <summary>Raw residual-stream inputs of a fused-norm case: larger than normed values, so the norm matters.</summary>
    const double RawInputScale = 3.0;

    static string Label(string label, bool norm) => norm ? label + " +rmsnorm" : label;

    static BenchCase MatVec(WeightFormat f, string label, int rows, int inDim, int batch, bool accumulate, bool norm) =>
        new($"{(norm ? "matvec_norm" : "matvec")}_{f.Name}", MatVecKernels.Family, $"{rows}x{inDim} {Label(label, norm)}", batch,
            MatVecKernels.BytesMoved(f, rows, inDim, batch, accumulate) + (norm ? f.VectorBytes(inDim) : 0), MatVecKernels.Flops(rows, inDim, batch), ctx =>
            {
                int seed = ctx.SeedOf(norm ? 15 : 1, rows, inDim, batch);
                var nf = f.VectorFormat;
                var w = HostData.Matrix(seed, rows, inDim, f);
                var x = HostData.Floats(seed + 1, (long)batch * inDim, norm ? RawInputScale : 1.0);
                var y0 = HostData.Floats(seed + 2, (long)batch * rows);
                var g = HostData.Weights(seed + 3, inDim, nf, 1.5);
                int copies = ctx.CopiesFor(f.MatrixBytes(rows, inDim));
                var wb = ctx.Rotated("bench.matvec.w", w, copies);
                var xb = ctx.Upload("bench.matvec.x", x);
                var yb = ctx.Upload("bench.matvec.y", y0);
                FusedNorm? fused = norm ? new FusedNorm(new WeightVector(nf, ctx.Upload("bench.matvec.norm", g)), Eps) : null;
                void Launch(int i) => ctx.Kernels.MatVec(wb.Copy(i), xb, yb, batch, accumulate, norm: fused);

                Validation Validate()
                {
                    Launch(0);
                    var y = BenchContext.Read(yb);
                    var ids = HostData.SampleRows(rows, HostData.SampledRows, (long)rows * inDim * batch <= HostData.FullCheckWork, seed);
                    int n = ids.Length;
                    var expected = new double[batch * n];
                    var actual = new float[batch * n];
                    for (int b = 0; b < batch; b++)
                    {
                        for (int i = 0; i < n; i++)
                        {
                            expected[b * n + i] = y0[(long)b * rows + ids[i]];
                            actual[b * n + i] = y[(long)b * rows + ids[i]];
                        }
                    }
                    var input = norm ? KernelReference.Normed(x, g, inDim, Eps, nf) : HostData.ToDouble(x);
                    KernelReference.MatVec(w.SelectRows(ids), input, expected, batch, accumulate);
                    return Validation.From(HostData.RowsMethod(n, rows), Tolerance.Matmul, Tolerance.Matmul.Check("matvec", actual, expected));
                }

                return new PreparedCase(copies, Validate, Launch);
            });

    static BenchCase SwiGlu(WeightFormat f, int rows, int inDim, int batch, bool norm) =>
        new($"{(norm ? "matvec_swiglu_norm" : "matvec_swiglu")}_{f.Name}", MatVecKernels.Family, $"{rows}x{inDim} {Label("gate+up", norm)}", batch,
            MatVecKernels.SwiGluBytesMoved(f, rows, inDim, batch) + (norm ? f.VectorBytes(inDim) : 0), MatVecKernels.SwiGluFlops(rows, inDim, batch), ctx =>
            {
                int seed = ctx.SeedOf(norm ? 16 : 2, rows, inDim, batch);
                var nf = f.VectorFormat;
                var wg = HostData.Matrix(seed, rows, inDim, f);
                var wu = HostData.Matrix(seed + 1, rows, inDim, f);
                var x = HostData.Floats(seed + 2, (long)batch * inDim, norm ? RawInputScale : 1.0);
                var g = HostData.Weights(seed + 3, inDim, nf, 1.5);
                int copies = ctx.CopiesFor(2 * f.MatrixBytes(rows, inDim));
                var wgb = ctx.Rotated("bench.matvec_swiglu.w_gate", wg, copies);
                var wub = ctx.Rotated("bench.matvec_swiglu.w_up", wu, copies);
                var xb = ctx.Upload("bench.matvec_swiglu.x", x);
                var hb = ctx.Alloc<float>("bench.matvec_swiglu.h", batch, rows);
                FusedNorm? fused = norm ? new FusedNorm(new WeightVector(nf, ctx.Upload("bench.matvec_swiglu.norm", g)), Eps) : null;
                void Launch(int i) => ctx.Kernels.MatVecSwiGlu(wgb.Copy(i), wub.Copy(i), xb, hb, batch, fused);

                Validation Validate()
                {
                    Launch(0);
                    var hv = BenchContext.Read(hb);
                    var ids = HostData.SampleRows(rows, HostData.SampledRows, 2L * rows * inDim * batch <= HostData.FullCheckWork, seed);
                    int n = ids.Length;
                    var expected = new double[batch * n];
                    var actual = new float[batch * n];
                    for (int b = 0; b < batch; b++)
                        for (int i = 0; i < n; i++)
                            actual[b * n + i] = hv[(long)b * rows + ids[i]];
                    var input = norm ? KernelReference.Normed(x, g, inDim, Eps, nf) : HostData.ToDouble(x);
                    KernelReference.MatVecSwiGlu(wg.SelectRows(ids), wu.SelectRows(ids), input, expected, batch);
                    return Validation.From(HostData.RowsMethod(n, rows), Tolerance.Matmul, Tolerance.Matmul.Check("matvec-swiglu", actual, expected));
                }

                return new PreparedCase(copies, Validate, Launch);
            });

    static BenchCase QkvRope(WeightFormat f, BenchShapes s, int batch, bool norm)
    {
        const int maxSeq = 64;
        var shape = new AttentionShape(s.Heads, s.KvHeads, s.HeadDim, maxSeq);
        int hidden = s.Hidden;
        return new($"{(norm ? "matvec_qkv_rope_norm" : "matvec_qkv_rope")}_{f.Name}", MatVecKernels.Family, $"{s.QDim}+2x{s.KvDim}x{hidden} {Label("q/k/v+rope", norm)}", batch,
            MatVecKernels.QkvRopeBytesMoved(f, hidden, batch, shape) + (norm ? f.VectorBytes(hidden) : 0), MatVecKernels.QkvRopeFlops(hidden, batch, shape), ctx =>
            {
                int seed = ctx.SeedOf(norm ? 17 : 3, hidden, batch);
                int qDim = shape.QDim, kvDim = shape.KvDim;
                var nf = f.VectorFormat;
                var wq = HostData.Matrix(seed, qDim, hidden, f);
                var wk = HostData.Matrix(seed + 1, kvDim, hidden, f);
                var wv = HostData.Matrix(seed + 2, kvDim, hidden, f);
                var x = HostData.Floats(seed + 3, (long)batch * hidden, norm ? RawInputScale : 1.0);
                var g = HostData.Weights(seed + 6, hidden, nf, 1.5);
                int[] slots = Enumerable.Range(0, batch).ToArray();
                int[] positions = new[] { 5, 17, 33, 63 }[..batch];
                long cacheLen = shape.Cache.Elements(batch);
                var kCache = HostData.HalfBits(seed + 4, cacheLen);
                var vCache = HostData.HalfBits(seed + 5, cacheLen);
                var rope = RopeTable.Plain(shape.HeadDim, maxSeq);
                int copies = ctx.CopiesFor(f.MatrixBytes(qDim + 2L * kvDim, hidden));
                var wqb = ctx.Rotated("bench.matvec_qkv_rope.wq", wq, copies);
                var wkb = ctx.Rotated("bench.matvec_qkv_rope.wk", wk, copies);
                var wvb = ctx.Rotated("bench.matvec_qkv_rope.wv", wv, copies);
                var xb = ctx.Upload("bench.matvec_qkv_rope.x", x);
                var qb = ctx.Alloc<float>("bench.matvec_qkv_rope.q", batch, qDim);
                var kcb = ctx.Upload("bench.matvec_qkv_rope.k_cache", kCache);
                var vcb = ctx.Upload("bench.matvec_qkv_rope.v_cache", vCache);
                var ropeb = ctx.Upload("bench.matvec_qkv_rope.rope", rope);
                var slotb = ctx.Upload("bench.matvec_qkv_rope.slots", slots);
                var posb = ctx.Upload("bench.matvec_qkv_rope.positions", positions);
                FusedNorm? fused = norm ? new FusedNorm(new WeightVector(nf, ctx.Upload("bench.matvec_qkv_rope.norm", g)), Eps) : null;

                void Launch(int i) => ctx.Kernels.MatVecQkvRope(
                    new QkvWeights(wqb.Copy(i), wkb.Copy(i), wvb.Copy(i)),
                    xb, qb, kcb, vcb, ropeb, slotb, posb, batch, shape, fused);

                Validation Validate()
                {
                    Launch(0);
                    var eq = new double[batch * qDim];
                    var ek = (ushort[])kCache.Clone();
                    var ev = (ushort[])vCache.Clone();
                    var input = norm ? KernelReference.Normed(x, g, hidden, Eps, nf) : HostData.ToDouble(x);
                    KernelReference.MatVecQkvRope(wq, wk, wv, input, eq, ek, ev, rope, slots, positions, batch, shape);
                    return Validation.From($"all {qDim + 2 * kvDim} rows", Tolerance.Matmul,
                        Tolerance.Matmul.Check("q", BenchContext.Read(qb), eq),
                        Tolerance.Fp16.Check("k cache", HostData.HalfToFloat(BenchContext.Read(kcb)), HostData.HalfToDouble(ek)),
                        Tolerance.Fp16.Check("v cache", HostData.HalfToFloat(BenchContext.Read(vcb)), HostData.HalfToDouble(ev)));
                }

                return new PreparedCase(copies, Validate, Launch);
            });
    }
}
