namespace IlgpuLlama.Kernels.Reference;

/// <summary>
/// Plain CPU references for every kernel family, in float64, with the same argument order as
/// the kernels (flat arrays in the kernels' layouts). They define what the kernels compute;
/// tests and the benchmark's validation step compare against them.
/// </summary>
public static class KernelReference
{
    /// <summary>fp16 bits to double.</summary>
    public static double HalfToDouble(ushort bits) => WeightFormat.Fp16.Decode(bits);

    /// <summary>Value <paramref name="offset"/> of a KV cache of 16-bit words in <paramref name="layout"/>'s type (an fp32 value is two words, low first).</summary>
    public static double KvValue(ushort[] cache, int offset, KvCacheLayout layout) => layout.Type == KvCacheType.Fp32
        ? BitConverter.UInt32BitsToSingle(cache[2 * offset] | (uint)cache[2 * offset + 1] << 16)
        : HalfToDouble(cache[offset]);

    /// <summary>Stores value <paramref name="offset"/> as the KV append does: fp16 saturating (<see cref="ToKvHalfBits"/>), or fp32 bits as two words.</summary>
    public static void StoreKv(ushort[] cache, int offset, double value, KvCacheLayout layout)
    {
        if (layout.Type == KvCacheType.Fp32)
        {
            uint bits = BitConverter.SingleToUInt32Bits((float)value);
            cache[2 * offset] = (ushort)bits;
            cache[2 * offset + 1] = (ushort)(bits >> 16);
        }
        else
        {
            cache[offset] = ToKvHalfBits(value);
        }
    }

    /// <summary>fp32 to fp16 bits, as the KV append does (the value is rounded to fp32 first, as on the device).</summary>
    public static ushort ToHalfBits(double value) => WeightFormat.Fp16.Encode((float)value);

    /// <summary>fp16 bits of a KV-cache value: finite values beyond +-65504 saturate there (DeviceMath.ToKvHalfBits).</summary>
    public static ushort ToKvHalfBits(double value) =>
        double.IsFinite(value) ? ToHalfBits(Math.Clamp((double)(float)value, -65504.0, 65504.0)) : ToHalfBits(value);

    /// <summary>x[t, :] = table[tokens[t], :].</summary>
    public static void Embedding(ushort[] table, int[] tokens, double[] x, int hidden, SixteenBitFormat format) =>
        Embedding(HostMatrix.Of(format, table, table.Length / hidden, hidden), tokens, x);

    /// <summary>x[t, :] = table[tokens[t], :] for a table in any format.</summary>
    public static void Embedding(HostMatrix table, int[] tokens, double[] x)
    {
        int hidden = table.Cols;
        for (int t = 0; t < tokens.Length; t++)
            for (int d = 0; d < hidden; d++)
                x[t * hidden + d] = table.Value(tokens[t], d);
    }

    /// <summary>y = x * rsqrt(mean(x^2) + eps) * w per row of n.</summary>
    public static void RmsNorm(float[] x, ushort[] weight, double[] y, int n, double eps, SixteenBitFormat format)
    {
        for (int r = 0; r < x.Length / n; r++)
        {
            double ss = 0;
            for (int i = 0; i < n; i++)
                ss += (double)x[r * n + i] * x[r * n + i];
            double inv = 1.0 / Math.Sqrt(ss / n + eps);
            for (int i = 0; i < n; i++)
                y[r * n + i] = x[r * n + i] * inv * format.Decode(weight[i]);
        }
    }

    static double[] Wide(float[] x) => Array.ConvertAll(x, v => (double)v);

    /// <summary>rmsnorm(x) * g per row of n, in float64: the input a fused-norm matvec computes with.</summary>
    public static double[] Normed(float[] x, ushort[] weight, int n, double eps, SixteenBitFormat format)
    {
        var y = new double[x.Length];
        RmsNorm(x, weight, y, n, eps, format);
        return y;
    }

    /// <summary>y[b, r] (+)= W[r, :] . x[b, :]; y has row stride yStride.</summary>
    public static void MatVec(ushort[] w, float[] x, double[] y, int rows, int inDim, int batch, bool accumulate, SixteenBitFormat format, int yStride = -1) =>
        MatVec(w, Wide(x), y, rows, inDim, batch, accumulate, format, yStride);

    /// <summary>y[b, r] (+)= W[r, :] . x[b, :] with a float64 input (a fused norm's output).</summary>
    public static void MatVec(ushort[] w, double[] x, double[] y, int rows, int inDim, int batch, bool accumulate, SixteenBitFormat format, int yStride = -1) =>
        MatVec(HostMatrix.Of(format, w, rows, inDim), x, y, batch, accumulate, yStride);

    /// <summary>y[b, r] (+)= W[r, :] . x[b, :] for a matrix in any format.</summary>
    public static void MatVec(HostMatrix w, double[] x, double[] y, int batch, bool accumulate, int yStride = -1)
    {
        int rows = w.Rows, inDim = w.Cols;
        if (yStride < 0)
            yStride = rows;
        for (int b = 0; b < batch; b++)
        {
            for (int r = 0; r < rows; r++)
            {
                double s = 0;
                for (int k = 0; k < inDim; k++)
                    s += w.Value(r, k) * x[b * inDim + k];
                int o = b * yStride + r;
                y[o] = accumulate ? y[o] + s : s;
            }
        }
    }

    /// <summary>SiLU.</summary>
    public static double Silu(double v) => v / (1 + Math.Exp(-v));

    /// <summary>h[b, r] = silu(Wg[r] . x[b]) * (Wu[r] . x[b]).</summary>
    public static void MatVecSwiGlu(ushort[] wGate, ushort[] wUp, float[] x, double[] h, int rows, int inDim, int batch, SixteenBitFormat format) =>
        MatVecSwiGlu(wGate, wUp, Wide(x), h, rows, inDim, batch, format);

    /// <summary>h[b, r] = silu(Wg[r] . x[b]) * (Wu[r] . x[b]) with a float64 input.</summary>
    public static void MatVecSwiGlu(ushort[] wGate, ushort[] wUp, double[] x, double[] h, int rows, int inDim, int batch, SixteenBitFormat format) =>
        MatVecSwiGlu(HostMatrix.Of(format, wGate, rows, inDim), HostMatrix.Of(format, wUp, rows, inDim), x, h, batch);

    /// <summary>h[b, r] = silu(Wg[r] . x[b]) * (Wu[r] . x[b]) for matrices in any format.</summary>
    public static void MatVecSwiGlu(HostMatrix wGate, HostMatrix wUp, double[] x, double[] h, int batch)
    {
        int rows = wGate.Rows;
        var g = new double[batch * rows];
        var u = new double[batch * rows];
        MatVec(wGate, x, g, batch, false);
        MatVec(wUp, x, u, batch, false);
        for (int i = 0; i < h.Length && i < g.Length; i++)
            h[i] = Silu(g[i]) * u[i];
    }

    /// <summary>rotate_half RoPE on one head vector, in place (double precision).</summary>
    public static void RotateHalf(double[] v, int offset, int headDim, int position, float[] rope)
    {
        int half = headDim / 2;
        for (int i = 0; i < half; i++)
        {
            int r = (position * half + i) * 2;
            double cos = rope[r];
            double sin = rope[r + 1];
            double a = v[offset + i];
            double b = v[offset + i + half];
            v[offset + i] = a * cos - b * sin;
            v[offset + i + half] = b * cos + a * sin;
        }
    }

    /// <summary>In-place RoPE of q [tokens, heads*hd] and k [tokens, kv_heads*hd].</summary>
    public static void Rope(double[] q, double[] k, int[] positions, float[] rope, int heads, int kvHeads, int headDim)
    {
        for (int t = 0; t < positions.Length; t++)
        {
            for (int h = 0; h < heads; h++)
                RotateHalf(q, (t * heads + h) * headDim, headDim, positions[t], rope);
            for (int h = 0; h < kvHeads; h++)
                RotateHalf(k, (t * kvHeads + h) * headDim, headDim, positions[t], rope);
        }
    }

    /// <summary>Writes k and v rows into the cache in its type (<see cref="KvCacheLayout"/>).</summary>
    public static void KvAppend(float[] k, float[] v, ushort[] kCache, ushort[] vCache, int[] slots, int[] positions, KvCacheLayout cache)
    {
        int kvDim = cache.TokenElements;
        for (int t = 0; t < slots.Length; t++)
        {
            for (int e = 0; e < kvDim; e++)
            {
                int head = e / cache.HeadDim;
                int d = e % cache.HeadDim;
                int o = cache.Offset(slots[t], head, positions[t], d);
                StoreKv(kCache, o, k[t * kvDim + e], cache);
                StoreKv(vCache, o, v[t * kvDim + e], cache);
            }
        }
    }

    /// <summary>
    /// The fused decode projection: q = rope(Wq x), cache_k[pos] = rope(Wk x), cache_v[pos] = Wv x in the cache's type.
    /// </summary>
    public static void MatVecQkvRope(ushort[] wq, ushort[] wk, ushort[] wv, float[] x, double[] q, ushort[] kCache, ushort[] vCache,
        float[] rope, int[] slots, int[] positions, int hidden, int batch, AttentionShape s, SixteenBitFormat format) =>
        MatVecQkvRope(wq, wk, wv, Wide(x), q, kCache, vCache, rope, slots, positions, hidden, batch, s, format);

    /// <summary>The fused decode projection with a float64 input.</summary>
    public static void MatVecQkvRope(ushort[] wq, ushort[] wk, ushort[] wv, double[] x, double[] q, ushort[] kCache, ushort[] vCache,
        float[] rope, int[] slots, int[] positions, int hidden, int batch, AttentionShape s, SixteenBitFormat format) =>
        MatVecQkvRope(HostMatrix.Of(format, wq, s.QDim, hidden), HostMatrix.Of(format, wk, s.KvDim, hidden), HostMatrix.Of(format, wv, s.KvDim, hidden),
            x, q, kCache, vCache, rope, slots, positions, batch, s);

    /// <summary>The fused decode projection for matrices in any format.</summary>
    public static void MatVecQkvRope(HostMatrix wq, HostMatrix wk, HostMatrix wv, double[] x, double[] q, ushort[] kCache, ushort[] vCache,
        float[] rope, int[] slots, int[] positions, int batch, AttentionShape s)
    {
        var k = new double[batch * s.KvDim];
        var v = new double[batch * s.KvDim];
        MatVec(wq, x, q, batch, false);
        MatVec(wk, x, k, batch, false);
        MatVec(wv, x, v, batch, false);
        Rope(q, k, positions, rope, s.Heads, s.KvHeads, s.HeadDim);
        KvAppend(Array.ConvertAll(k, d => (float)d), Array.ConvertAll(v, d => (float)d), kCache, vCache, slots, positions, s.Cache);
    }

    /// <summary>C[m, n] (+)= X[m, :] . W[n, :].</summary>
    public static void Gemm(float[] x, ushort[] w, double[] c, int m, int n, int k, bool accumulate, SixteenBitFormat format) =>
        Gemm(x, HostMatrix.Of(format, w, n, k), c, m, accumulate);

    /// <summary>C[m, n] (+)= X[m, :] . W[n, :] for a matrix in any format.</summary>
    public static void Gemm(float[] x, HostMatrix w, double[] c, int m, bool accumulate)
    {
        int n = w.Rows, k = w.Cols;
        var wd = w.Dequantized();
        Parallel.For(0, m, r =>
        {
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int kk = 0; kk < k; kk++)
                    s += x[r * k + kk] * wd[j * k + kk];
                c[r * n + j] = accumulate ? c[r * n + j] + s : s;
            }
        });
    }

    /// <summary>gate = silu(gate) * up.</summary>
    public static void SwiGlu(double[] gate, float[] up)
    {
        for (int i = 0; i < gate.Length; i++)
            gate[i] = Silu(gate[i]) * up[i];
    }

    /// <summary>
    /// Causal GQA attention of each query row over keys 0..positions[row] of its slot:
    /// softmax(q k^T * scale) v, query head h reading kv head h / (heads / kv_heads).
    /// </summary>
    public static void Attention(float[] q, ushort[] kCache, ushort[] vCache, int[] slots, int[] positions, double[] output, AttentionShape s)
    {
        int headDim = s.HeadDim;
        int qDim = s.QDim;
        double scale = 1.0 / Math.Sqrt(headDim);
        for (int row = 0; row < slots.Length; row++)
        {
            int len = positions[row] + 1;
            for (int h = 0; h < s.Heads; h++)
            {
                int kvh = h / s.GroupHeads;
                var scores = new double[len];
                double max = double.NegativeInfinity;
                for (int p = 0; p < len; p++)
                {
                    int key = s.Cache.Offset(slots[row], kvh, p, 0);
                    double dot = 0;
                    for (int d = 0; d < headDim; d++)
                        dot += q[row * qDim + h * headDim + d] * KvValue(kCache, key + d, s.Cache);
                    scores[p] = dot * scale;
                    max = Math.Max(max, scores[p]);
                }
                double sum = 0;
                for (int p = 0; p < len; p++)
                {
                    scores[p] = Math.Exp(scores[p] - max);
                    sum += scores[p];
                }
                for (int d = 0; d < headDim; d++)
                {
                    double acc = 0;
                    for (int p = 0; p < len; p++)
                        acc += scores[p] * KvValue(vCache, s.Cache.Offset(slots[row], kvh, p, d), s.Cache);
                    output[row * qDim + h * headDim + d] = acc / sum;
                }
            }
        }
    }

    /// <summary>Per row: argmax (first on ties, -1 on NaN), max, and sum exp((l - max) * invT) at one temperature for all rows.</summary>
    public static (int[] Token, double[] Max, double[] SumExp) LogitsReduce(float[] logits, int rows, int vocab, double invTemperature) =>
        LogitsReduce(logits, rows, vocab, Enumerable.Repeat(invTemperature, rows).ToArray());

    /// <summary>Per row: argmax (first on ties, -1 on NaN), max, and sum exp((l - max) * invTemperature[row]).</summary>
    public static (int[] Token, double[] Max, double[] SumExp) LogitsReduce(float[] logits, int rows, int vocab, double[] invTemperature)
    {
        var token = new int[rows];
        var max = new double[rows];
        var sum = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            double m = double.NegativeInfinity;
            int idx = -1;
            bool nan = false;
            for (int v = 0; v < vocab; v++)
            {
                float l = logits[r * vocab + v];
                if (float.IsNaN(l))
                    nan = true;
                else if (l > m)
                {
                    m = l;
                    idx = v;
                }
            }
            double z = 0;
            for (int v = 0; v < vocab; v++)
            {
                float l = logits[r * vocab + v];
                if (!float.IsNaN(l) && !float.IsNegativeInfinity(l))
                    z += Math.Exp((l - m) * invTemperature[r]);
            }
            token[r] = nan ? -1 : idx;
            max[r] = m;
            sum[r] = z;
        }
        return (token, max, sum);
    }

    /// <summary>Top-k per row, descending, ties broken by smaller id.</summary>
    public static (float[] Values, int[] Ids) TopK(float[] logits, int rows, int vocab, int k)
    {
        var values = new float[rows * k];
        var ids = new int[rows * k];
        for (int r = 0; r < rows; r++)
        {
            var order = Enumerable.Range(0, vocab)
                .OrderByDescending(v => logits[r * vocab + v])
                .ThenBy(v => v)
                .Take(k)
                .ToArray();
            for (int i = 0; i < k; i++)
            {
                values[r * k + i] = i < order.Length ? logits[r * vocab + order[i]] : float.NegativeInfinity;
                ids[r * k + i] = i < order.Length ? order[i] : int.MaxValue;
            }
        }
        return (values, ids);
    }

    /// <summary>Hugging Face repetition penalty over the seen flags of each row's slot, one penalty for every row.</summary>
    public static void RepetitionPenalty(float[] logits, int[] slots, byte[] seen, int vocab, float penalty) =>
        RepetitionPenalty(logits, slots, seen, vocab, Enumerable.Repeat(penalty, slots.Length).ToArray());

    /// <summary>Hugging Face repetition penalty over the seen flags of each row's slot, <paramref name="penalties"/>[row] per row.</summary>
    public static void RepetitionPenalty(float[] logits, int[] slots, byte[] seen, int vocab, float[] penalties)
    {
        for (int r = 0; r < slots.Length; r++)
        {
            for (int v = 0; v < vocab; v++)
            {
                if (seen[slots[r] * vocab + v] == 0)
                    continue;
                float l = logits[r * vocab + v];
                logits[r * vocab + v] = l > 0 ? l / penalties[r] : l * penalties[r];
            }
        }
    }
}
