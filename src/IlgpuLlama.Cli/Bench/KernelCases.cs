using ILGPU;
using ILGPU.Runtime;
using IlgpuLlama.Kernels;
using IlgpuLlama.Kernels.Reference;

namespace IlgpuLlama.Cli.Bench;

/// <summary>
/// The benchmark cases for one shape set. Each case allocates its buffers through the bench
/// context's allocator, fills them with random data, validates the first launch against
/// <see cref="KernelReference"/> (on sampled rows when the reference would be slow: the output
/// says which), and launches on a rotating copy of its streamed inputs.
/// </summary>
public static class KernelCases
{
    /// <summary>Multiply-adds below which the reference checks every output row.</summary>
    public const long FullCheckWork = 16L * 1024 * 1024;

    /// <summary>Rows checked when sampling.</summary>
    public const int SampledRows = 256;

    /// <summary>GEMM rows (tokens) checked when sampling.</summary>
    public const int SampledGemmRows = 8;

    /// <summary>Builds every case of a shape set.</summary>
    public static IReadOnlyList<BenchCase> For(BenchShapes s, WeightStorage storage)
    {
        string st = storage == WeightStorage.Fp16 ? "fp16" : "bf16";
        int h = s.Hidden;
        int t = s.PrefillTokens;
        var list = new List<BenchCase>();
        foreach (int b in new[] { 1, 4 })
        {
            list.Add(MatVec(st, "q/o proj", h, h, b, false));
            list.Add(MatVec(st, "k/v proj", s.KvDim, h, b, false));
            list.Add(MatVecSwiGlu(st, s.Intermediate, h, b));
            list.Add(MatVec(st, "down proj +=", h, s.Intermediate, b, true));
            list.Add(MatVec(st, "lm head", s.Vocab, h, b, false));
            list.Add(QkvRope(st, s, b));
        }
        foreach (int m in s.GemmTokens)
        {
            list.Add(Gemm(st, m, h, h, "q/o proj"));
            list.Add(Gemm(st, m, s.Intermediate, h, "gate/up proj"));
        }
        foreach (int rows in new[] { 1, 4, t })
            list.Add(RmsNorm(st, rows, h));
        foreach (int count in new[] { 4, t })
            list.Add(Embedding(st, count, h, s.Vocab));
        foreach (int seq in s.DecodeSeqs)
            foreach (int b in new[] { 1, 4 })
                list.Add(AttentionDecode(s, seq, b));
        list.Add(AttentionPrefill(s, t));
        foreach (int b in new[] { 1, 4 })
        {
            list.Add(LogitsReduce(s.Vocab, b));
            list.Add(TopK(s.Vocab, b, s.TopK));
        }
        list.Add(RepetitionPenalty(s.Vocab, 4));
        list.Add(SwiGlu(t, s.Intermediate));
        list.Add(Rope(s, t));
        list.Add(KvAppend(s, t));
        return list;
    }

    static string RowsMethod(int checkedRows, int rows, string what = "rows") =>
        checkedRows == rows ? $"all {rows} {what}" : $"{checkedRows} of {rows} {what} (sampled)";

    static int SeedOf(BenchContext ctx, params int[] parts)
    {
        int seed = ctx.Seed;
        foreach (int p in parts)
            seed = unchecked(seed * 31 + p);
        return seed & 0x7FFFFFFF;
    }

    static double[] ToDouble(float[] a) => Array.ConvertAll(a, v => (double)v);

    static float[] HalfToFloat(ushort[] bits) => Array.ConvertAll(bits, b => (float)KernelReference.HalfToDouble(b));

    static double[] HalfToDouble(ushort[] bits) => Array.ConvertAll(bits, KernelReference.HalfToDouble);

    static Comparison Check(string what, float[] actual, double[] expected, Tolerance tol) =>
        Comparison.Check(what, actual, expected, tol.Abs, tol.Rel);

    static float[] Read(ArrayView<float> view)
    {
        var a = new float[view.Length];
        view.CopyToCPU(a);
        return a;
    }

    static T[] Read<T>(ArrayView<T> view)
        where T : unmanaged
    {
        var a = new T[view.Length];
        view.CopyToCPU(a);
        return a;
    }

    // ---- decode matmuls ------------------------------------------------------------------

    static BenchCase MatVec(string st, string label, int rows, int inDim, int batch, bool accumulate) =>
        new($"matvec_{st}", "matvec", $"{rows}x{inDim} {label}", batch,
            MatVecKernels.BytesMoved(rows, inDim, batch, accumulate), MatVecKernels.Flops(rows, inDim, batch), ctx =>
            {
                int seed = SeedOf(ctx, 1, rows, inDim, batch);
                var w = HostData.Weights(seed, (long)rows * inDim, ctx.Storage);
                var x = HostData.Floats(seed + 1, (long)batch * inDim);
                var y0 = HostData.Floats(seed + 2, (long)batch * rows);
                int copies = ctx.CopiesFor(2L * rows * inDim);
                var wb = ctx.Rotated("bench.matvec.w", w, copies);
                var xb = ctx.Upload("bench.matvec.x", x);
                var yb = ctx.Upload("bench.matvec.y", y0);

                Validation Validate()
                {
                    ctx.Kernels.MatVec(wb.Copy(0), xb.View, yb.View, rows, inDim, batch, accumulate);
                    var y = Read(yb.View);
                    var ids = HostData.SampleRows(rows, SampledRows, (long)rows * inDim * batch <= FullCheckWork, seed);
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
                    KernelReference.MatVec(HostData.Rows(w, ids, inDim), x, expected, n, inDim, batch, accumulate, ctx.Storage);
                    return Validation.From(RowsMethod(n, rows), Tolerance.Matmul, Check("matvec", actual, expected, Tolerance.Matmul));
                }

                return new PreparedCase(copies, Validate, i => ctx.Kernels.MatVec(wb.Copy(i), xb.View, yb.View, rows, inDim, batch, accumulate));
            });

    static BenchCase MatVecSwiGlu(string st, int rows, int inDim, int batch) =>
        new($"matvec_swiglu_{st}", "matvec", $"{rows}x{inDim} gate+up", batch,
            MatVecKernels.SwiGluBytesMoved(rows, inDim, batch), MatVecKernels.SwiGluFlops(rows, inDim, batch), ctx =>
            {
                int seed = SeedOf(ctx, 2, rows, inDim, batch);
                var wg = HostData.Weights(seed, (long)rows * inDim, ctx.Storage);
                var wu = HostData.Weights(seed + 1, (long)rows * inDim, ctx.Storage);
                var x = HostData.Floats(seed + 2, (long)batch * inDim);
                int copies = ctx.CopiesFor(4L * rows * inDim);
                var wgb = ctx.Rotated("bench.matvec_swiglu.w_gate", wg, copies);
                var wub = ctx.Rotated("bench.matvec_swiglu.w_up", wu, copies);
                var xb = ctx.Upload("bench.matvec_swiglu.x", x);
                var hb = ctx.Alloc<float>("bench.matvec_swiglu.h", batch, rows);

                Validation Validate()
                {
                    ctx.Kernels.MatVecSwiGlu(wgb.Copy(0), wub.Copy(0), xb.View, hb.View, rows, inDim, batch);
                    var hv = Read(hb.View);
                    var ids = HostData.SampleRows(rows, SampledRows, 2L * rows * inDim * batch <= FullCheckWork, seed);
                    int n = ids.Length;
                    var expected = new double[batch * n];
                    var actual = new float[batch * n];
                    for (int b = 0; b < batch; b++)
                        for (int i = 0; i < n; i++)
                            actual[b * n + i] = hv[(long)b * rows + ids[i]];
                    KernelReference.MatVecSwiGlu(HostData.Rows(wg, ids, inDim), HostData.Rows(wu, ids, inDim), x, expected, n, inDim, batch, ctx.Storage);
                    return Validation.From(RowsMethod(n, rows), Tolerance.Matmul, Check("matvec-swiglu", actual, expected, Tolerance.Matmul));
                }

                return new PreparedCase(copies, Validate, i => ctx.Kernels.MatVecSwiGlu(wgb.Copy(i), wub.Copy(i), xb.View, hb.View, rows, inDim, batch));
            });

    static float[] RopeTableFor(int headDim, int maxSeq)
    {
        var inv = new double[headDim / 2];
        for (int i = 0; i < inv.Length; i++)
            inv[i] = 1.0 / Math.Pow(500000.0, 2.0 * i / headDim);
        return RopeTable.Build(inv, maxSeq);
    }

    static BenchCase QkvRope(string st, BenchShapes s, int batch)
    {
        int hidden = s.Hidden, heads = s.Heads, kv = s.KvHeads, hd = s.HeadDim;
        return new($"matvec_qkv_rope_{st}", "matvec", $"{s.QDim}+2x{s.KvDim}x{hidden} q/k/v+rope", batch,
            MatVecKernels.QkvRopeBytesMoved(hidden, batch, heads, kv, hd), MatVecKernels.QkvRopeFlops(hidden, batch, heads, kv, hd), ctx =>
            {
                int seed = SeedOf(ctx, 3, hidden, batch);
                const int maxSeq = 64;
                int qDim = s.QDim, kvDim = s.KvDim;
                var wq = HostData.Weights(seed, (long)qDim * hidden, ctx.Storage);
                var wk = HostData.Weights(seed + 1, (long)kvDim * hidden, ctx.Storage);
                var wv = HostData.Weights(seed + 2, (long)kvDim * hidden, ctx.Storage);
                var x = HostData.Floats(seed + 3, (long)batch * hidden);
                int[] slots = Enumerable.Range(0, batch).ToArray();
                int[] positions = new[] { 5, 17, 33, 63 }[..batch];
                long cacheLen = (long)batch * kv * maxSeq * hd;
                var kCache = HostData.HalfBits(seed + 4, cacheLen);
                var vCache = HostData.HalfBits(seed + 5, cacheLen);
                var rope = RopeTableFor(hd, maxSeq);
                int copies = ctx.CopiesFor(2L * (qDim + 2L * kvDim) * hidden);
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

                void Launch(int i) => ctx.Kernels.MatVecQkvRope(wqb.Copy(i), wkb.Copy(i), wvb.Copy(i), xb.View, qb.View, kcb.View, vcb.View, ropeb.View,
                    slotb.View, posb.View, hidden, batch, heads, kv, hd, maxSeq);

                Validation Validate()
                {
                    Launch(0);
                    var q = Read(qb.View);
                    var kc = Read(kcb.View);
                    var vc = Read(vcb.View);
                    var eq = new double[batch * qDim];
                    var ek = (ushort[])kCache.Clone();
                    var ev = (ushort[])vCache.Clone();
                    KernelReference.MatVecQkvRope(wq, wk, wv, x, eq, ek, ev, rope, slots, positions, hidden, batch, heads, kv, hd, maxSeq, ctx.Storage);
                    return Validation.From($"all {qDim + 2 * kvDim} rows", Tolerance.Matmul,
                        Check("q", q, eq, Tolerance.Matmul),
                        Check("k cache", HalfToFloat(kc), HalfToDouble(ek), Tolerance.Fp16),
                        Check("v cache", HalfToFloat(vc), HalfToDouble(ev), Tolerance.Fp16));
                }

                return new PreparedCase(copies, Validate, Launch);
            });
    }

    // ---- prefill GEMM --------------------------------------------------------------------

    static BenchCase Gemm(string st, int m, int n, int k, string label) =>
        new($"gemm_{st}", "gemm", $"M={m} {n}x{k} {label}", m, GemmKernels.BytesMoved(m, n, k, false), GemmKernels.Flops(m, n, k), ctx =>
        {
            int seed = SeedOf(ctx, 4, m, n, k);
            var x = HostData.Floats(seed, (long)m * k);
            var w = HostData.Weights(seed + 1, (long)n * k, ctx.Storage);
            int copies = ctx.CopiesFor(2L * n * k);
            var xb = ctx.Upload("bench.gemm.x", x);
            var wb = ctx.Rotated("bench.gemm.w", w, copies);
            var cb = ctx.Alloc<float>("bench.gemm.c", m, n);

            Validation Validate()
            {
                ctx.Kernels.Gemm(xb.View, wb.Copy(0), cb.View, m, n, k, false);
                var c = Read(cb.View);
                var ids = HostData.SampleRows(m, SampledGemmRows, (long)m * n * k <= FullCheckWork, seed);
                var expected = new double[(long)ids.Length * n];
                KernelReference.Gemm(HostData.Rows(x, ids, k), w, expected, ids.Length, n, k, false, ctx.Storage);
                return Validation.From(RowsMethod(ids.Length, m, "tokens"), Tolerance.Matmul,
                    Check("gemm", HostData.Rows(c, ids, n), expected, Tolerance.Matmul));
            }

            return new PreparedCase(copies, Validate, i => ctx.Kernels.Gemm(xb.View, wb.Copy(i), cb.View, m, n, k, false));
        });

    // ---- normalisation, embedding --------------------------------------------------------

    static BenchCase RmsNorm(string st, int rows, int n) =>
        new($"rmsnorm_{st}", "rmsnorm", $"{rows}x{n}", rows, RmsNormKernels.BytesMoved(rows, n), RmsNormKernels.Flops(rows, n), ctx =>
        {
            int seed = SeedOf(ctx, 5, rows, n);
            var x = HostData.Floats(seed, (long)rows * n, 3.0);
            var w = HostData.Weights(seed + 1, n, ctx.Storage, 1.5);
            int copies = ctx.CopiesFor(8L * rows * n);
            var xb = ctx.Rotated("bench.rmsnorm.x", x, copies);
            var wb = ctx.Upload("bench.rmsnorm.w", w);
            var yb = ctx.Alloc<float>("bench.rmsnorm.y", rows, n);
            const float eps = 1e-5f;

            Validation Validate()
            {
                ctx.Kernels.RmsNorm(xb.Copy(0), wb.View, yb.View, rows, n, eps);
                var expected = new double[(long)rows * n];
                KernelReference.RmsNorm(x, w, expected, n, eps, ctx.Storage);
                return Validation.From(RowsMethod(rows, rows), Tolerance.Elementwise, Check("rmsnorm", Read(yb.View), expected, Tolerance.Elementwise));
            }

            return new PreparedCase(copies, Validate, i => ctx.Kernels.RmsNorm(xb.Copy(i), wb.View, yb.View, rows, n, eps));
        });

    static BenchCase Embedding(string st, int count, int hidden, int vocab) =>
        new($"embedding_{st}", "embedding", $"{count} tokens x {hidden}, vocab {vocab}", count, EmbeddingKernels.BytesMoved(count, hidden), 0, ctx =>
        {
            int seed = SeedOf(ctx, 6, count, hidden, vocab);
            var table = HostData.Weights(seed, (long)vocab * hidden, ctx.Storage, 1.0);
            int copies = ctx.CopiesFor(EmbeddingKernels.BytesMoved(count, hidden));
            // Every copy is a different random token list, so rotation reads different table rows.
            var tokens = HostData.Ints(seed + 1, (long)copies * count, vocab);
            var tableb = ctx.Upload("bench.embedding.table", table);
            var tokb = ctx.Upload("bench.embedding.tokens", tokens);
            var xb = ctx.Alloc<float>("bench.embedding.x", count, hidden);
            ArrayView<int> Tokens(int i) => tokb.View.SubView((long)(i % copies) * count, count);

            Validation Validate()
            {
                ctx.Kernels.Embedding(tableb.View, Tokens(0), xb.View, count, hidden);
                var expected = new double[(long)count * hidden];
                KernelReference.Embedding(table, tokens[..count], expected, hidden, ctx.Storage);
                return Validation.From(RowsMethod(count, count, "tokens"), Tolerance.Exact, Check("embedding", Read(xb.View), expected, Tolerance.Exact));
            }

            return new PreparedCase(copies, Validate, i => ctx.Kernels.Embedding(tableb.View, Tokens(i), xb.View, count, hidden));
        });

    // ---- attention -----------------------------------------------------------------------

    sealed record AttentionSetup(int Rows, int[] Slots, int[] Positions, int MaxSeq, int SlotCount, int Splits);

    static PreparedCase PrepareAttention(BenchContext ctx, BenchShapes s, AttentionSetup a, long bytesPerLaunch, int seed, string name)
    {
        int heads = s.Heads, kv = s.KvHeads, hd = s.HeadDim;
        long cacheLen = (long)a.SlotCount * kv * a.MaxSeq * hd;
        var q = HostData.Floats(seed, (long)a.Rows * heads * hd);
        var kCache = HostData.HalfBits(seed + 1, cacheLen);
        var vCache = HostData.HalfBits(seed + 2, cacheLen);
        int copies = ctx.CopiesFor(bytesPerLaunch);
        var qb = ctx.Upload($"bench.{name}.q", q);
        var kb = ctx.Rotated($"bench.{name}.k_cache", kCache, copies);
        var vb = ctx.Rotated($"bench.{name}.v_cache", vCache, copies);
        var sb = ctx.Upload($"bench.{name}.slots", a.Slots);
        var pb = ctx.Upload($"bench.{name}.positions", a.Positions);
        var ob = ctx.Alloc<float>($"bench.{name}.out", a.Rows, heads * hd);
        var accb = ctx.Alloc<float>($"bench.{name}.partial_acc", a.Rows, heads, a.Splits, hd);
        var mlb = ctx.Alloc<float>($"bench.{name}.partial_ml", a.Rows, heads, a.Splits, 2);
        var cb = ctx.Upload($"bench.{name}.counters", new int[a.Rows * kv]);
        float scale = 1f / MathF.Sqrt(hd);

        void Launch(int i) => ctx.Kernels.Attention(qb.View, kb.Copy(i), vb.Copy(i), sb.View, pb.View, ob.View, accb.View, mlb.View, cb.View,
            a.Rows, heads, kv, hd, a.MaxSeq, a.Splits, scale);

        Validation Validate()
        {
            Launch(0);
            var expected = new double[(long)a.Rows * heads * hd];
            KernelReference.Attention(q, kCache, vCache, a.Slots, a.Positions, expected, heads, kv, hd, a.MaxSeq, 1.0 / Math.Sqrt(hd));
            var counters = Read(cb.View);
            var c = Check("attention", Read(ob.View), expected, Tolerance.Attention);
            var reset = counters.All(v => v == 0)
                ? Comparison.Check("counters reset", [0f], [0d], 0, 0)
                : new Comparison(false, double.PositiveInfinity, 1, "split counters were not reset to zero");
            return Validation.From($"all {a.Rows} rows, {a.Splits} splits", Tolerance.Attention, c, reset);
        }

        return new PreparedCase(copies, Validate, Launch);
    }

    static BenchCase AttentionDecode(BenchShapes s, int seq, int batch) =>
        new("attention", "attention", $"decode seq {seq}, {s.Heads}/{s.KvHeads} heads x {s.HeadDim}", batch,
            AttentionKernels.BytesMoved(batch, s.Heads, s.KvHeads, s.HeadDim, seq), AttentionKernels.Flops(batch, s.Heads, s.HeadDim, seq), ctx =>
            {
                int splits = LlamaKernels.AttentionSplits(seq, ctx.Kernels.Tuning.AttentionMinChunk, ctx.Kernels.Tuning.AttentionGroup);
                var setup = new AttentionSetup(batch, Enumerable.Range(0, batch).ToArray(), Enumerable.Repeat(seq - 1, batch).ToArray(), seq, batch, splits);
                long kvBytes = 2L * 2L * batch * s.KvHeads * seq * s.HeadDim;
                return PrepareAttention(ctx, s, setup, kvBytes, SeedOf(ctx, 7, seq, batch), "attention");
            });

    static BenchCase AttentionPrefill(BenchShapes s, int tokens) =>
        new("attention", "attention", $"prefill {tokens} tokens, {s.Heads}/{s.KvHeads} heads x {s.HeadDim}", 1,
            AttentionKernels.PrefillBytesMoved(tokens, s.Heads, s.KvHeads, s.HeadDim), AttentionKernels.PrefillFlops(tokens, s.Heads, s.HeadDim), ctx =>
            {
                var setup = new AttentionSetup(tokens, new int[tokens], Enumerable.Range(0, tokens).ToArray(), tokens, 1, 1);
                long kvBytes = 2L * 2L * s.KvHeads * tokens * s.HeadDim;
                return PrepareAttention(ctx, s, setup, kvBytes, SeedOf(ctx, 8, tokens), "attention_prefill");
            });

    // ---- logits --------------------------------------------------------------------------

    static BenchCase LogitsReduce(int vocab, int rows) =>
        new("logits_reduce", "logits", $"vocab {vocab}", rows, LogitsKernels.ReduceBytesMoved(rows, vocab), LogitsKernels.ReduceFlops(rows, vocab), ctx =>
        {
            int seed = SeedOf(ctx, 9, vocab, rows);
            var logits = HostData.Floats(seed, (long)rows * vocab, 8.0);
            int parts = ctx.Kernels.LogitsReduceParts(vocab);
            int copies = ctx.CopiesFor(4L * rows * vocab);
            var lb = ctx.Rotated("bench.logits_reduce.logits", logits, copies);
            var pm = ctx.Alloc<float>("bench.logits_reduce.partial_max", rows, parts);
            var ps = ctx.Alloc<float>("bench.logits_reduce.partial_sum", rows, parts);
            var pi = ctx.Alloc<int>("bench.logits_reduce.partial_idx", rows, parts);
            var cnt = ctx.Upload("bench.logits_reduce.counters", new int[rows]);
            var tok = ctx.Alloc<int>("bench.logits_reduce.token", rows);
            var max = ctx.Alloc<float>("bench.logits_reduce.max", rows);
            var sum = ctx.Alloc<float>("bench.logits_reduce.sum_exp", rows);
            const float temperature = 0.8f;

            void Launch(int i) => ctx.Kernels.LogitsReduce(lb.Copy(i), pm.View, ps.View, pi.View, cnt.View, tok.View, max.View, sum.View, rows, vocab, temperature);

            Validation Validate()
            {
                Launch(0);
                var (eTok, eMax, eSum) = KernelReference.LogitsReduce(logits, rows, vocab, 1.0 / temperature);
                var gotTok = Array.ConvertAll(Read(tok.View), v => (float)v);
                return Validation.From($"all {rows} rows x {vocab}", Tolerance.Normaliser,
                    Comparison.Check("argmax", gotTok, Array.ConvertAll(eTok, v => (double)v), 0, 0),
                    Comparison.Check("max", Read(max.View), eMax, 0, 0),
                    Check("sum exp", Read(sum.View), eSum, Tolerance.Normaliser));
            }

            return new PreparedCase(copies, Validate, Launch);
        });

    static BenchCase TopK(int vocab, int rows, int wantK) =>
        new("topk", "logits", $"vocab {vocab}", rows, LogitsKernels.TopKBytesMoved(rows, vocab, wantK), 0, ctx =>
        {
            int k = Math.Min(wantK, ctx.Kernels.TopKMax(vocab));
            int seed = SeedOf(ctx, 10, vocab, rows);
            var logits = HostData.Floats(seed, (long)rows * vocab, 8.0);
            int parts = ctx.Kernels.TopKParts(vocab);
            int copies = ctx.CopiesFor(4L * rows * vocab);
            var lb = ctx.Rotated("bench.topk.logits", logits, copies);
            var pv = ctx.Alloc<float>("bench.topk.partial_val", rows, parts, k);
            var pi = ctx.Alloc<int>("bench.topk.partial_idx", rows, parts, k);
            var cnt = ctx.Upload("bench.topk.counters", new int[rows]);
            var ov = ctx.Alloc<float>("bench.topk.values", rows, k);
            var oi = ctx.Alloc<int>("bench.topk.ids", rows, k);

            void Launch(int i) => ctx.Kernels.TopK(lb.Copy(i), pv.View, pi.View, cnt.View, ov.View, oi.View, rows, vocab, k);

            Validation Validate()
            {
                Launch(0);
                var (eVal, eIds) = KernelReference.TopK(logits, rows, vocab, k);
                return Validation.From($"all {rows} rows, k={k}", Tolerance.Exact,
                    Comparison.Check("top-k ids", Array.ConvertAll(Read(oi.View), v => (float)v), Array.ConvertAll(eIds, v => (double)v), 0, 0),
                    Comparison.Check("top-k values", Read(ov.View), ToDouble(eVal), 0, 0));
            }

            return new PreparedCase(copies, Validate, Launch, k == wantK ? null : $"k clamped to {k}");
        });

    static BenchCase RepetitionPenalty(int vocab, int rows)
    {
        const double seenFraction = 0.05;
        long seenCount = (long)(rows * (long)vocab * seenFraction);
        return new("repetition_penalty", "logits", $"vocab {vocab}, 5% seen", rows,
            LogitsKernels.RepetitionPenaltyBytesMoved(rows, vocab, seenCount), 0, ctx =>
            {
                int seed = SeedOf(ctx, 11, vocab, rows);
                var logits = HostData.Floats(seed, (long)rows * vocab, 8.0);
                var rng = new Random(seed + 1);
                var seen = new byte[(long)rows * vocab];
                for (long i = 0; i < seen.LongLength; i++)
                    seen[i] = rng.NextDouble() < seenFraction ? (byte)1 : (byte)0;
                int[] slots = Enumerable.Range(0, rows).ToArray();
                int copies = ctx.CopiesFor((long)rows * vocab * 5);
                var lb = ctx.Rotated("bench.repetition_penalty.logits", logits, copies);
                var seenb = ctx.Rotated("bench.repetition_penalty.seen", seen, copies);
                var sb = ctx.Upload("bench.repetition_penalty.slots", slots);
                const float penalty = 1.3f;

                Validation Validate()
                {
                    ctx.Kernels.RepetitionPenalty(lb.Copy(0), sb.View, seenb.Copy(0), rows, vocab, penalty);
                    var expected = (float[])logits.Clone();
                    KernelReference.RepetitionPenalty(expected, slots, seen, vocab, penalty);
                    return Validation.From($"all {rows} rows x {vocab}", Tolerance.Exact,
                        Comparison.Check("repetition penalty", Read(lb.Copy(0)), ToDouble(expected), 0, 0));
                }

                return new PreparedCase(copies, Validate, i => ctx.Kernels.RepetitionPenalty(lb.Copy(i), sb.View, seenb.Copy(i), rows, vocab, penalty));
            });
    }

    // ---- prefill element-wise ------------------------------------------------------------

    static BenchCase SwiGlu(int tokens, int inter)
    {
        long n = (long)tokens * inter;
        return new("swiglu", "elementwise", $"{tokens}x{inter}", tokens, ElementwiseKernels.SwiGluBytesMoved(n), ElementwiseKernels.SwiGluFlops(n), ctx =>
        {
            int seed = SeedOf(ctx, 12, tokens, inter);
            var gate = HostData.Floats(seed, n, 4.0);
            var up = HostData.Floats(seed + 1, n, 2.0);
            int copies = ctx.CopiesFor(12L * n);
            var gb = ctx.Rotated("bench.swiglu.gate", gate, copies);
            var ub = ctx.Rotated("bench.swiglu.up", up, copies);

            Validation Validate()
            {
                ctx.Kernels.SwiGlu(gb.Copy(0), ub.Copy(0), (int)n);
                var expected = ToDouble(gate);
                KernelReference.SwiGlu(expected, up);
                return Validation.From($"all {n} values", Tolerance.Elementwise, Check("swiglu", Read(gb.Copy(0)), expected, Tolerance.Elementwise));
            }

            return new PreparedCase(copies, Validate, i => ctx.Kernels.SwiGlu(gb.Copy(i), ub.Copy(i), (int)n));
        });
    }

    static BenchCase Rope(BenchShapes s, int tokens) =>
        new("rope", "rope", $"{tokens} tokens, {s.Heads}+{s.KvHeads} heads x {s.HeadDim}", tokens,
            RopeKernels.BytesMoved(tokens, s.Heads, s.KvHeads, s.HeadDim), RopeKernels.Flops(tokens, s.Heads, s.KvHeads, s.HeadDim), ctx =>
            {
                int seed = SeedOf(ctx, 13, tokens);
                var q = HostData.Floats(seed, (long)tokens * s.QDim);
                var k = HostData.Floats(seed + 1, (long)tokens * s.KvDim);
                int[] positions = Enumerable.Range(0, tokens).ToArray();
                var rope = RopeTableFor(s.HeadDim, tokens);
                int copies = ctx.CopiesFor(RopeKernels.BytesMoved(tokens, s.Heads, s.KvHeads, s.HeadDim));
                var qb = ctx.Rotated("bench.rope.q", q, copies);
                var kb = ctx.Rotated("bench.rope.k", k, copies);
                var pb = ctx.Upload("bench.rope.positions", positions);
                var rb = ctx.Upload("bench.rope.table", rope);

                void Launch(int i) => ctx.Kernels.Rope(qb.Copy(i), kb.Copy(i), pb.View, rb.View, tokens, s.Heads, s.KvHeads, s.HeadDim);

                Validation Validate()
                {
                    Launch(0);
                    var eq = ToDouble(q);
                    var ek = ToDouble(k);
                    KernelReference.Rope(eq, ek, positions, rope, s.Heads, s.KvHeads, s.HeadDim);
                    return Validation.From($"all {tokens} tokens", Tolerance.Elementwise,
                        Check("rope q", Read(qb.Copy(0)), eq, Tolerance.Elementwise),
                        Check("rope k", Read(kb.Copy(0)), ek, Tolerance.Elementwise));
                }

                return new PreparedCase(copies, Validate, Launch);
            });

    static BenchCase KvAppend(BenchShapes s, int tokens) =>
        new("kv_append", "kvcache", $"{tokens} tokens, {s.KvHeads} kv heads x {s.HeadDim}", tokens,
            KvCacheKernels.BytesMoved(tokens, s.KvHeads, s.HeadDim), 0, ctx =>
            {
                int seed = SeedOf(ctx, 14, tokens);
                var k = HostData.Floats(seed, (long)tokens * s.KvDim);
                var v = HostData.Floats(seed + 1, (long)tokens * s.KvDim);
                int[] slots = new int[tokens];
                int[] positions = Enumerable.Range(0, tokens).ToArray();
                long cacheLen = (long)s.KvHeads * tokens * s.HeadDim;
                var kCache = HostData.HalfBits(seed + 2, cacheLen);
                var vCache = HostData.HalfBits(seed + 3, cacheLen);
                int copies = ctx.CopiesFor(8L * tokens * s.KvDim);
                var kb = ctx.Rotated("bench.kv_append.k", k, copies);
                var vb = ctx.Rotated("bench.kv_append.v", v, copies);
                var kcb = ctx.Upload("bench.kv_append.k_cache", kCache);
                var vcb = ctx.Upload("bench.kv_append.v_cache", vCache);
                var sb = ctx.Upload("bench.kv_append.slots", slots);
                var pb = ctx.Upload("bench.kv_append.positions", positions);

                void Launch(int i) => ctx.Kernels.KvAppend(kb.Copy(i), vb.Copy(i), kcb.View, vcb.View, sb.View, pb.View, tokens, s.KvHeads, s.HeadDim, tokens);

                Validation Validate()
                {
                    Launch(0);
                    var ek = (ushort[])kCache.Clone();
                    var ev = (ushort[])vCache.Clone();
                    KernelReference.KvAppend(k, v, ek, ev, slots, positions, s.KvHeads, s.HeadDim, tokens);
                    return Validation.From($"all {tokens} tokens", Tolerance.Fp16,
                        Check("k cache", HalfToFloat(Read(kcb.View)), HalfToDouble(ek), Tolerance.Fp16),
                        Check("v cache", HalfToFloat(Read(vcb.View)), HalfToDouble(ev), Tolerance.Fp16));
                }

                return new PreparedCase(copies, Validate, Launch);
            });
}
