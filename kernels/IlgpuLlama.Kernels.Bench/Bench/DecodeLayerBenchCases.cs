using IlgpuLlama.Kernels.Reference;

namespace IlgpuLlama.Kernels.Bench;

/// <summary>
/// The persistent decode layer's validated benchmark cases: one decoder layer of a decode step at
/// the bench shapes, checked against the five fused-norm launches it replaces (q/k/v + RoPE + KV
/// append, attention, o, gate/up + SwiGLU, down) on the same device and inputs.
/// </summary>
sealed class DecodeLayerBenchCases : FamilyBenchCases
{
    public override string Family => DecodeLayerKernels.Family;

    public override IEnumerable<BenchCase> BenchCases(BenchShapes s, SixteenBitFormat f) => Cases(s, f);

    public override IEnumerable<BenchCase> BlockBenchCases(BenchShapes s, BlockQuantFormat f) => Cases(s.WithWholeBlocks(f.BlockSize), f);

    static IEnumerable<BenchCase> Cases(BenchShapes s, WeightFormat f)
    {
        foreach (int b in new[] { 1, 4 })
            yield return Layer(s, f, s.DecodeSeqs[0], b);
    }

    const float Eps = 1e-5f;

    static BenchCase Layer(BenchShapes s, WeightFormat f, int seq, int batch)
    {
        var shape = new AttentionShape(s.Heads, s.KvHeads, s.HeadDim, seq);
        return new($"decode_layer_{f.Name}", DecodeLayerKernels.Family, $"one layer, {s.Hidden} hidden, {s.Intermediate} intermediate, seq {seq}", batch,
            DecodeLayerKernels.BytesMoved(f, s.Hidden, s.Intermediate, batch, shape, seq), DecodeLayerKernels.Flops(s.Hidden, s.Intermediate, batch, shape, seq), ctx =>
            {
                int seed = ctx.SeedOf(31, seq, batch);
                var nf = f.VectorFormat;
                HostMatrix Matrix(int i, int rows, int cols) => HostData.Matrix(seed + i, rows, cols, f);
                WeightMatrix Upload(string name, HostMatrix m) => ctx.Rotated($"bench.layer.{name}", m, 1).Copy(0);
                var qkv = new QkvWeights(Upload("q", Matrix(1, shape.QDim, s.Hidden)), Upload("k", Matrix(2, shape.KvDim, s.Hidden)), Upload("v", Matrix(3, shape.KvDim, s.Hidden)));
                var o = Upload("o", Matrix(4, s.Hidden, shape.QDim));
                var gate = Upload("gate", Matrix(5, s.Intermediate, s.Hidden));
                var up = Upload("up", Matrix(6, s.Intermediate, s.Hidden));
                var down = Upload("down", Matrix(7, s.Hidden, s.Intermediate));
                var inputNorm = new FusedNorm(new WeightVector(nf, ctx.Upload("bench.layer.input_norm", HostData.Weights(seed + 8, s.Hidden, nf, 1.5))), Eps);
                var postNorm = new FusedNorm(new WeightVector(nf, ctx.Upload("bench.layer.post_norm", HostData.Weights(seed + 9, s.Hidden, nf, 1.5))), Eps);
                var weights = new DecodeLayerWeights(qkv, o, gate, up, down, inputNorm, postNorm);

                var x0 = HostData.Floats(seed + 10, (long)batch * s.Hidden, 3.0);
                long cacheLen = shape.Cache.Elements(batch);
                var kCache0 = HostData.HalfBits(seed + 11, cacheLen);
                var vCache0 = HostData.HalfBits(seed + 12, cacheLen);
                var rope = HostData.Floats(seed + 13, (long)seq * shape.HeadDim);
                int splits = AttentionKernels.Splits(seq, ctx.Kernels.Tuning);
                var slots = ctx.Upload("bench.layer.slots", Enumerable.Range(0, batch).ToArray());
                var positions = ctx.Upload("bench.layer.positions", Enumerable.Repeat(seq - 1, batch).ToArray());
                var ropeb = ctx.Upload("bench.layer.rope", rope);
                var q = ctx.Alloc<float>("bench.layer.q", batch, shape.QDim);
                var attnOut = ctx.Alloc<float>("bench.layer.attn_out", batch, shape.QDim);
                var acc = ctx.Alloc<float>("bench.layer.partial_acc", batch, shape.Heads, splits, shape.HeadDim);
                var ml = ctx.Alloc<float>("bench.layer.partial_ml", batch, shape.Heads, splits, 2);
                var counters = ctx.Upload("bench.layer.counters", new int[batch * shape.KvHeads]);
                var hidden = ctx.Alloc<float>("bench.layer.hidden", batch, s.Intermediate);
                var sync = ctx.Upload("bench.layer.sync", new int[DecodeLayerKernels.SyncInts]);

                // Two copies of the residual and the caches: the persistent launch's and the five launches'.
                var x = ctx.Upload("bench.layer.x", x0);
                var kc = ctx.Upload("bench.layer.k_cache", kCache0);
                var vc = ctx.Upload("bench.layer.v_cache", vCache0);
                var xRef = ctx.Upload("bench.layer.x_ref", x0);
                var kcRef = ctx.Upload("bench.layer.k_cache_ref", kCache0);
                var vcRef = ctx.Upload("bench.layer.v_cache_ref", vCache0);

                DecodeLayerBuffers Buffers(ArrayView<float> xv, ArrayView<ushort> k, ArrayView<ushort> v) =>
                    new(xv, ropeb, new AttentionBuffers(q, k, v, slots, positions, attnOut, acc, ml, counters), hidden, sync);
                void Launch(int i) => ctx.Kernels.DecodeLayer(weights, Buffers(x, kc, vc), batch, splits, shape);

                Validation Validate()
                {
                    Launch(0);
                    var k = ctx.Kernels;
                    k.MatVecQkvRope(qkv, xRef, q, kcRef, vcRef, ropeb, slots, positions, batch, shape, inputNorm);
                    k.Attention(new AttentionBuffers(q, kcRef, vcRef, slots, positions, attnOut, acc, ml, counters), batch, splits, shape);
                    k.MatVec(o, attnOut, xRef, batch, true);
                    k.MatVecSwiGlu(gate, up, xRef, hidden, batch, postNorm);
                    k.MatVec(down, hidden, xRef, batch, true);
                    var expected = HostData.ToDouble(BenchContext.Read(xRef));
                    var c = Tolerance.Matmul.Check("residual after the layer", BenchContext.Read(x), expected);
                    var kCheck = Tolerance.Fp16.Check("appended keys", Array.ConvertAll(BenchContext.Read(kc), b => (float)BitConverter.UInt16BitsToHalf(b)),
                        Array.ConvertAll(BenchContext.Read(kcRef), b => (double)BitConverter.UInt16BitsToHalf(b)));
                    var reset = BenchContext.Read(sync).All(v => v == 0)
                        ? Comparison.Check("counters reset", [0f], [0d], 0, 0)
                        : new Comparison(false, double.PositiveInfinity, 1, "the layer's task counters were not reset to zero");
                    return Validation.From($"all {batch} rows against the five fused-norm launches", Tolerance.Matmul, c, kCheck, reset);
                }

                return new PreparedCase(1, Validate, Launch);
            });
    }
}
