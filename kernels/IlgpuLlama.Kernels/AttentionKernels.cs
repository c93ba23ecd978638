namespace IlgpuLlama.Kernels;

// Grouped-query attention over the KV cache (fp16, or fp32: KvCacheLayout.Words), fp32 math,
// numerically safe (running max).
//
// A "query row" is one token of one sequence: it sees keys 0..pos of its cache slot. Decode has
// one row per sequence; prefill has one row per prompt token (causality comes from pos).
//
// Decomposition (flash-decoding): one group per (row, kv head, split). The group serves all
// heads/kv_heads query heads that share the kv head, so each K/V byte is loaded once for the
// whole GQA group. The row's keys are divided into `splits` contiguous chunks (at least
// MinChunk keys each, so short rows use fewer groups); a group walks its chunk in tiles of
// group-size keys:
//   1. scores: thread t takes key (tile + t), loads its head_dim halves with 128-bit loads (four
//      in flight) and dots them with each query head (q staged in shared memory, pre-scaled by
//      1/sqrt(head_dim)); an fp32 cache takes two 128-bit loads per 8 values (attention_fp32, the
//      same code specialised for IKvCacheValues Fp32CacheValues); with float64 accumulation each
//      score is summed and scaled in float64 (attention_fp32_f64, Fp32CacheValuesF64Scores);
//   2. online softmax: warp h updates head h's running max m and sum l, rescale factor alpha,
//      and turns the tile's scores into probabilities exp(s - m);
//   3. P.V: thread e owns (head, dim pair) entries e, e + group, ... ; per tile it sums p * V
//      in registers (V read as half pairs, 8 keys in flight) and folds the sum into the entry's
//      accumulator in shared memory (one read-modify-write per entry per tile), so any group
//      size works, down to a single warp.
// A single-chunk row writes the normalised output directly. Otherwise each group writes
// (acc, m, l) partials; the last group of a (row, kv head) to finish (atomic counter, device
// fence) merges them: out = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s, and resets the
// counter to zero for the next launch. One launch, no host round trip, no second kernel.
// Launch: grid = rows * kv_heads * splits, group = 128 threads on a GPU (any whole number of
// warps works), dynamic shared memory = SharedFloats(...) floats.

/// <summary>Arguments of <see cref="AttentionKernels.Attention(AttentionArgs)"/>.</summary>
public struct AttentionArgs
{
    public ArrayView<float> Q;          // [rows, heads * head_dim] fp32, rotated
    public ArrayView<U4> KCache;        // this layer's K cache (KvCacheLayout) as U4: 8 fp16 or 4 fp32 values
    public ArrayView<uint> VCache;      // same layout as 32-bit words: an fp16 pair or one fp32
    public ArrayView<int> Slots;        // [rows] cache slot of each row
    public ArrayView<int> Positions;    // [rows] the row attends to keys 0..pos
    public ArrayView<float> Out;        // [rows, heads * head_dim] fp32
    public ArrayView<float> PartialAcc; // [rows, heads, splits, head_dim]
    public ArrayView<float> PartialMl;  // [rows, heads, splits, 2] (m, l)
    public ArrayView<int> Counters;     // [rows, kv_heads], zero between launches
    public AttentionShape Shape;
    public int Splits, MinChunk;
}

/// <summary>The device buffers of one attention launch (what changes per call site, not per step).</summary>
/// <param name="Q">[rows, heads * head_dim] fp32, rotated</param>
/// <param name="KCache">this layer's K cache (<see cref="KvCacheLayout"/>), 16-bit words</param>
/// <param name="VCache">this layer's V cache, same layout</param>
/// <param name="Slots">[rows] cache slot of each row</param>
/// <param name="Positions">[rows] the row attends to keys 0..pos</param>
/// <param name="Output">[rows, heads * head_dim] fp32</param>
/// <param name="PartialAcc">[rows, heads, splits, head_dim] split partials (decode)</param>
/// <param name="PartialMl">[rows, heads, splits, 2] split (max, sum) (decode)</param>
/// <param name="Counters">[rows, kv_heads] completion counters, zero between launches (decode)</param>
public readonly record struct AttentionBuffers(ArrayView<float> Q, ArrayView<ushort> KCache, ArrayView<ushort> VCache, ArrayView<int> Slots, ArrayView<int> Positions,
    ArrayView<float> Output, ArrayView<float> PartialAcc, ArrayView<float> PartialMl, ArrayView<int> Counters);

/// <summary>Two accumulators (one dimension pair).</summary>
public struct Float2
{
    public float X, Y;
}

/// <summary>GQA attention for decode (with split-K) and prefill (causal).</summary>
public static class AttentionKernels
{
    /// <summary>Most key splits one decode row uses (the merge keeps one weight per split in a score slot).</summary>
    public const int MaxSplits = 32;

    /// <summary>Dynamic shared memory (floats) the kernel needs.</summary>
    public static int SharedFloats(AttentionShape s, int groupSize)
    {
        int g = s.GroupHeads;
        return 2 * g * s.HeadDim + g * groupSize + 3 * g;
    }

    /// <summary>Number of key splits the decode workspace must hold for <paramref name="maxSeq"/> positions.</summary>
    public static int Splits(int maxSeq, KernelTuning t) => Math.Clamp((maxSeq + t.AttentionMinChunk - 1) / t.AttentionMinChunk, 1, Math.Min(MaxSplits, t.AttentionGroup));

    /// <summary>The attention kernel over an fp16 cache. See the file header.</summary>
    public static void Attention(AttentionArgs a) => AttentionBlock<Fp16CacheValues>(a, Grid.IdxX);

    /// <summary>The attention kernel over an fp32 cache.</summary>
    public static void AttentionFp32(AttentionArgs a) => AttentionBlock<Fp32CacheValues>(a, Grid.IdxX);

    /// <summary>The attention kernel over an fp32 cache with float64 scores (float64 accumulation).</summary>
    public static void AttentionFp32F64(AttentionArgs a) => AttentionBlock<Fp32CacheValuesF64Scores>(a, Grid.IdxX);

    /// <summary>
    /// One group's work of the attention kernel over a cache of <typeparamref name="TKv"/> values: (row,
    /// kv head, split) number <paramref name="block"/> (also a task of the persistent decode kernel).
    /// </summary>
    internal static void AttentionBlock<TKv>(AttentionArgs a, int block)
        where TKv : struct, IKvCacheValues
    {
        var shape = a.Shape;
        var smem = SharedMemory.GetDynamic<float>();
        var lastFlag = SharedMemory.Allocate<int>(1);
        int tn = Group.DimX;
        int tid = Group.IdxX;

        int split = block % a.Splits;
        int rowKv = block / a.Splits;
        int kvh = rowKv % shape.KvHeads;
        int row = rowKv / shape.KvHeads;

        int len = a.Positions[row] + 1;
        int chunk = XMath.Max((len + a.Splits - 1) / a.Splits, a.MinChunk);
        int start = split * chunk;
        if (start >= len)
            return; // the whole group leaves: this split has no keys
        int end = XMath.Min(start + chunk, len);
        int active = (len + chunk - 1) / chunk;

        int heads = shape.Heads;
        int hd = shape.HeadDim;
        int halfHd = hd / 2;
        int hd8 = hd / 8;
        int groupHeads = heads / shape.KvHeads;
        int qDim = heads * hd;
        int h0 = kvh * groupHeads;

        // Shared layout: q [G, hd] | scores [G, tn] | m [G] | l [G] | alpha [G] | acc [G, hd]
        int sOff = groupHeads * hd;
        int mOff = sOff + groupHeads * tn;
        int lOff = mOff + groupHeads;
        int aOff = lOff + groupHeads;
        int accOff = aOff + groupHeads;

        int qBase = row * qDim + h0 * hd;
        // q pre-scaled by 1/sqrt(head_dim) in fp32; float64 scores take it unscaled and scale the sum.
        for (int e = tid; e < groupHeads * hd; e += tn)
            smem[e] = default(TKv).Float64Scores ? a.Q[qBase + e] : a.Q[qBase + e] * shape.Scale;
        for (int h = tid; h < groupHeads; h += tn)
        {
            smem[mOff + h] = float.NegativeInfinity;
            smem[lOff + h] = 0f;
        }
        for (int e = tid; e < groupHeads * hd; e += tn)
            smem[accOff + e] = 0f;
        Group.Barrier();

        int entries = groupHeads * halfHd; // (head, dim pair) accumulators

        int kvBase = shape.Cache.Row(a.Slots[row], kvh, 0); // in keys
        int warps = tn / Warp.WarpSize;

        for (int tile = start; tile < end; tile += tn)
        {
            int n = XMath.Min(tn, end - tile);

            // 1. scores for key (tile + tid), every head of the GQA group. The key row is read
            // four 128-bit chunks at a time (32 halves in flight per thread) and each batch of
            // chunks is dotted with every head's q, partial sums kept in the score slots.
            if (tid < n && default(TKv).Float64Scores)
            {
                ScoresFp32F64(a.KCache, (kvBase + tile + tid) * hd8 * 2, hd8, groupHeads, hd, smem, sOff + tid, tn);
            }
            else if (tid < n)
            {
                for (int h = 0; h < groupHeads; h++)
                    smem[sOff + h * tn + tid] = 0f;
                if (default(TKv).Words == 2)
                    ScoresFp32(a.KCache, (kvBase + tile + tid) * hd8 * 2, hd8, groupHeads, hd, smem, sOff + tid, tn);
                else
                    ScoresFp16(a.KCache, (kvBase + tile + tid) * hd8, hd8, groupHeads, hd, smem, sOff + tid, tn);
            }
            Group.Barrier();

            // 2. online softmax, one warp per head
            for (int h = Warp.WarpIdx; h < groupHeads; h += warps)
            {
                int so = sOff + h * tn;
                float tileMax = float.NegativeInfinity;
                for (int t = Warp.LaneIdx; t < n; t += Warp.WarpSize)
                    tileMax = XMath.Max(tileMax, smem[so + t]);
                tileMax = DeviceMath.WarpMax(tileMax);
                float mOld = smem[mOff + h];
                float mNew = XMath.Max(mOld, tileMax);
                float sum = 0f;
                for (int t = Warp.LaneIdx; t < n; t += Warp.WarpSize)
                {
                    float p = XMath.Exp(smem[so + t] - mNew);
                    smem[so + t] = p;
                    sum += p;
                }
                sum = DeviceMath.WarpSum(sum);
                if (Warp.IsFirstLane)
                {
                    float alpha = XMath.Exp(mOld - mNew);
                    smem[aOff + h] = alpha;
                    smem[lOff + h] = smem[lOff + h] * alpha + sum;
                    smem[mOff + h] = mNew;
                }
            }
            Group.Barrier();

            // 3. P.V for the owned (head, dim pair) entries
            for (int e = tid; e < entries; e += tn)
            {
                int h = e / halfHd;
                int pr = e - h * halfHd;
                int ao = accOff + 2 * e;
                Float2 acc;
                acc.X = smem[ao];
                acc.Y = smem[ao + 1];
                acc = default(TKv).Words == 2
                    ? AccumulateVFp32(acc, a.VCache, smem, (kvBase + tile) * hd + 2 * pr, hd, sOff + h * tn, smem[aOff + h], n)
                    : AccumulateV(acc, a.VCache, smem, (kvBase + tile) * halfHd + pr, halfHd, sOff + h * tn, smem[aOff + h], n);
                smem[ao] = acc.X;
                smem[ao + 1] = acc.Y;
            }
            Group.Barrier();
        }

        if (active == 1)
        {
            for (int e = tid; e < entries; e += tn)
            {
                int h = e / halfHd;
                int pr = e - h * halfHd;
                WriteOut(a.Out, row * qDim + (h0 + h) * hd + 2 * pr, smem, accOff + 2 * e, 1.0f / smem[lOff + h]);
            }
            return;
        }

        // Partials of this split, then the last group to finish merges all splits.
        for (int e = tid; e < entries; e += tn)
        {
            int h = e / halfHd;
            int pr = e - h * halfHd;
            WriteOut(a.PartialAcc, (((row * heads) + h0 + h) * a.Splits + split) * hd + 2 * pr, smem, accOff + 2 * e, 1.0f);
        }
        for (int h = tid; h < groupHeads; h += tn)
        {
            int o = (((row * heads) + h0 + h) * a.Splits + split) * 2;
            a.PartialMl[o] = smem[mOff + h];
            a.PartialMl[o + 1] = smem[lOff + h];
        }
        MemoryFence.DeviceLevel();
        Group.Barrier();
        int counter = row * shape.KvHeads + kvh;
        if (tid == 0)
            lastFlag[0] = Atomic.Add(ref a.Counters[counter], 1) == active - 1 ? 1 : 0;
        Group.Barrier();
        if (lastFlag[0] == 0)
            return;
        MemoryFence.DeviceLevel();

        // Merge: per head, the split weights w_s = e^(m_s - M) / sum_s e^(m_s - M) l_s are computed
        // once into shared memory (reusing the score slots), then every (head, dim) output is a
        // weighted sum of the splits' accumulators, four splits' loads in flight.
        for (int h = tid; h < groupHeads; h += tn)
        {
            int pb = ((row * heads) + h0 + h) * a.Splits;
            float mMax = float.NegativeInfinity;
            for (int sp = 0; sp < active; sp++)
                mMax = XMath.Max(mMax, a.PartialMl[(pb + sp) * 2]);
            float den = 0f;
            for (int sp = 0; sp < active; sp++)
            {
                float wgt = XMath.Exp(a.PartialMl[(pb + sp) * 2] - mMax);
                smem[sOff + h * tn + sp] = wgt;
                den += wgt * a.PartialMl[(pb + sp) * 2 + 1];
            }
            float inv = 1.0f / den;
            for (int sp = 0; sp < active; sp++)
                smem[sOff + h * tn + sp] *= inv;
        }
        Group.Barrier();
        for (int e = tid; e < groupHeads * hd; e += tn)
        {
            int h = e / hd;
            int d = e - h * hd;
            int pb = ((row * heads) + h0 + h) * a.Splits;
            int wo = sOff + h * tn;
            float num = 0f;
            int sp = 0;
            for (; sp + 4 <= active; sp += 4)
            {
                float p0 = a.PartialAcc[(pb + sp) * hd + d];
                float p1 = a.PartialAcc[(pb + sp + 1) * hd + d];
                float p2 = a.PartialAcc[(pb + sp + 2) * hd + d];
                float p3 = a.PartialAcc[(pb + sp + 3) * hd + d];
                num += smem[wo + sp] * p0 + smem[wo + sp + 1] * p1 + smem[wo + sp + 2] * p2 + smem[wo + sp + 3] * p3;
            }
            for (; sp < active; sp++)
                num += smem[wo + sp] * a.PartialAcc[(pb + sp) * hd + d];
            a.Out[row * qDim + (h0 + h) * hd + d] = num;
        }
        if (tid == 0)
            a.Counters[counter] = 0;
    }

    /// <summary>
    /// Step 1 over an fp16 cache: one key row's scores against every head of the GQA group, added
    /// into score slots <paramref name="scoreIndex"/> + h x <paramref name="scoreStride"/>. The key
    /// row (chunk <paramref name="kRow"/> of 8 halves on) is read four 128-bit chunks at a time and
    /// each batch is dotted with every head's q (shared memory from 0, head h at h x head_dim).
    /// </summary>
    static void ScoresFp16(ArrayView<U4> kCache, int kRow, int hd8, int groupHeads, int hd, ArrayView<float> smem, int scoreIndex, int scoreStride)
    {
        int c = 0;
        for (; c + 4 <= hd8; c += 4)
        {
            W8 k0 = MatVecKernels.Widen<Fp16Format.Device>(kCache[kRow + c]);
            W8 k1 = MatVecKernels.Widen<Fp16Format.Device>(kCache[kRow + c + 1]);
            W8 k2 = MatVecKernels.Widen<Fp16Format.Device>(kCache[kRow + c + 2]);
            W8 k3 = MatVecKernels.Widen<Fp16Format.Device>(kCache[kRow + c + 3]);
            for (int h = 0; h < groupHeads; h++)
            {
                int q = h * hd + c * 8;
                float s = DotShared(k0, smem, q) + DotShared(k1, smem, q + 8) + DotShared(k2, smem, q + 16) + DotShared(k3, smem, q + 24);
                smem[scoreIndex + h * scoreStride] += s;
            }
        }
        for (; c < hd8; c++)
        {
            W8 k0 = MatVecKernels.Widen<Fp16Format.Device>(kCache[kRow + c]);
            for (int h = 0; h < groupHeads; h++)
                smem[scoreIndex + h * scoreStride] += DotShared(k0, smem, h * hd + c * 8);
        }
    }

    /// <summary>
    /// Step 1 over an fp32 cache: as <see cref="ScoresFp16"/>, each chunk of 8 values being two
    /// 128-bit loads (<paramref name="kRow"/> counts 128-bit loads), two chunks in flight.
    /// </summary>
    static void ScoresFp32(ArrayView<U4> kCache, int kRow, int hd8, int groupHeads, int hd, ArrayView<float> smem, int scoreIndex, int scoreStride)
    {
        int c = 0;
        for (; c + 2 <= hd8; c += 2)
        {
            W8 k0 = Floats(kCache[kRow + 2 * c], kCache[kRow + 2 * c + 1]);
            W8 k1 = Floats(kCache[kRow + 2 * c + 2], kCache[kRow + 2 * c + 3]);
            for (int h = 0; h < groupHeads; h++)
            {
                int q = h * hd + c * 8;
                smem[scoreIndex + h * scoreStride] += DotShared(k0, smem, q) + DotShared(k1, smem, q + 8);
            }
        }
        for (; c < hd8; c++)
        {
            W8 k0 = Floats(kCache[kRow + 2 * c], kCache[kRow + 2 * c + 1]);
            for (int h = 0; h < groupHeads; h++)
                smem[scoreIndex + h * scoreStride] += DotShared(k0, smem, h * hd + c * 8);
        }
    }

    /// <summary>
    /// Step 1 over an fp32 cache with float64 accumulation: each head's score summed over the whole
    /// key row in float64 (every product exact) against the unscaled q, scaled by 1/sqrt(head_dim) in
    /// float64 and rounded once. An fp32 sum of q.k is the largest error left in attention there:
    /// scores are exponentiated, so their absolute error is the probabilities' relative one. Heads
    /// outer, one float64 sum live: the key row is read again per head (from L1 or L2), the price of
    /// the evaluation mode.
    /// </summary>
    static void ScoresFp32F64(ArrayView<U4> kCache, int kRow, int hd8, int groupHeads, int hd, ArrayView<float> smem, int scoreIndex, int scoreStride)
    {
        double scale = 1.0 / XMath.Sqrt((double)hd);
        for (int h = 0; h < groupHeads; h++)
        {
            double s = 0;
            for (int c = 0; c < hd8; c++)
                s = DotSharedF64(s, Floats(kCache[kRow + 2 * c], kCache[kRow + 2 * c + 1]), smem, h * hd + c * 8);
            smem[scoreIndex + h * scoreStride] = (float)(s * scale);
        }
    }

    /// <summary>Adds the float64 dot product of eight fp32 key values with eight q values in shared memory (each product exact).</summary>
    static double DotSharedF64(double s, W8 k, ArrayView<float> smem, int q)
    {
        s += (double)k.V0 * smem[q];
        s += (double)k.V1 * smem[q + 1];
        s += (double)k.V2 * smem[q + 2];
        s += (double)k.V3 * smem[q + 3];
        s += (double)k.V4 * smem[q + 4];
        s += (double)k.V5 * smem[q + 5];
        s += (double)k.V6 * smem[q + 6];
        s += (double)k.V7 * smem[q + 7];
        return s;
    }

    /// <summary>Eight fp32 values from two 128-bit loads of their bits.</summary>
    static W8 Floats(U4 a, U4 b)
    {
        W8 r;
        r.V0 = Interop.IntAsFloat(a.X);
        r.V1 = Interop.IntAsFloat(a.Y);
        r.V2 = Interop.IntAsFloat(a.Z);
        r.V3 = Interop.IntAsFloat(a.W);
        r.V4 = Interop.IntAsFloat(b.X);
        r.V5 = Interop.IntAsFloat(b.Y);
        r.V6 = Interop.IntAsFloat(b.Z);
        r.V7 = Interop.IntAsFloat(b.W);
        return r;
    }

    /// <summary>Dot product of eight widened key values with eight q values in shared memory.</summary>
    static float DotShared(W8 k, ArrayView<float> smem, int q)
    {
        float s = k.V0 * smem[q];
        s += k.V1 * smem[q + 1];
        s += k.V2 * smem[q + 2];
        s += k.V3 * smem[q + 3];
        s += k.V4 * smem[q + 4];
        s += k.V5 * smem[q + 5];
        s += k.V6 * smem[q + 6];
        s += k.V7 * smem[q + 7];
        return s;
    }

    static Float2 AccumulateV(Float2 acc, ArrayView<uint> v, ArrayView<float> smem, int vIndex, int vStride, int pIndex, float alpha, int n)
    {
        acc.X *= alpha;
        acc.Y *= alpha;
        Fp16Format.Device f = default;
        int t = 0;
        // Eight keys in flight: the loads are independent, only the FMAs chain.
        for (; t + 8 <= n; t += 8)
        {
            int vi = vIndex + t * vStride;
            uint v0 = v[vi];
            uint v1 = v[vi + vStride];
            uint v2 = v[vi + 2 * vStride];
            uint v3 = v[vi + 3 * vStride];
            uint v4 = v[vi + 4 * vStride];
            uint v5 = v[vi + 5 * vStride];
            uint v6 = v[vi + 6 * vStride];
            uint v7 = v[vi + 7 * vStride];
            int p = pIndex + t;
            acc.X += smem[p] * f.Low(v0) + smem[p + 1] * f.Low(v1) + smem[p + 2] * f.Low(v2) + smem[p + 3] * f.Low(v3)
                + smem[p + 4] * f.Low(v4) + smem[p + 5] * f.Low(v5) + smem[p + 6] * f.Low(v6) + smem[p + 7] * f.Low(v7);
            acc.Y += smem[p] * f.High(v0) + smem[p + 1] * f.High(v1) + smem[p + 2] * f.High(v2) + smem[p + 3] * f.High(v3)
                + smem[p + 4] * f.High(v4) + smem[p + 5] * f.High(v5) + smem[p + 6] * f.High(v6) + smem[p + 7] * f.High(v7);
        }
        for (; t < n; t++)
        {
            uint v0 = v[vIndex + t * vStride];
            float p0 = smem[pIndex + t];
            acc.X += p0 * f.Low(v0);
            acc.Y += p0 * f.High(v0);
        }
        return acc;
    }

    /// <summary>
    /// <see cref="AccumulateV"/> over an fp32 cache: <paramref name="vIndex"/> and
    /// <paramref name="vStride"/> count 32-bit words, the pair being words vIndex and vIndex + 1;
    /// four keys in flight.
    /// </summary>
    static Float2 AccumulateVFp32(Float2 acc, ArrayView<uint> v, ArrayView<float> smem, int vIndex, int vStride, int pIndex, float alpha, int n)
    {
        acc.X *= alpha;
        acc.Y *= alpha;
        int t = 0;
        for (; t + 4 <= n; t += 4)
        {
            int vi = vIndex + t * vStride;
            float a0 = Interop.IntAsFloat(v[vi]), b0 = Interop.IntAsFloat(v[vi + 1]);
            float a1 = Interop.IntAsFloat(v[vi + vStride]), b1 = Interop.IntAsFloat(v[vi + vStride + 1]);
            float a2 = Interop.IntAsFloat(v[vi + 2 * vStride]), b2 = Interop.IntAsFloat(v[vi + 2 * vStride + 1]);
            float a3 = Interop.IntAsFloat(v[vi + 3 * vStride]), b3 = Interop.IntAsFloat(v[vi + 3 * vStride + 1]);
            int p = pIndex + t;
            acc.X += smem[p] * a0 + smem[p + 1] * a1 + smem[p + 2] * a2 + smem[p + 3] * a3;
            acc.Y += smem[p] * b0 + smem[p + 1] * b1 + smem[p + 2] * b2 + smem[p + 3] * b3;
        }
        for (; t < n; t++)
        {
            int vi = vIndex + t * vStride;
            float p0 = smem[pIndex + t];
            acc.X += p0 * Interop.IntAsFloat(v[vi]);
            acc.Y += p0 * Interop.IntAsFloat(v[vi + 1]);
        }
        return acc;
    }

    static void WriteOut(ArrayView<float> dst, int o, ArrayView<float> smem, int accIndex, float scale)
    {
        dst[o] = smem[accIndex] * scale;
        dst[o + 1] = smem[accIndex + 1] * scale;
    }

    // ---- declaration, launcher, cost ------------------------------------------------------

    /// <summary>Family name (this file).</summary>
    public const string Family = "attention";

    /// <summary>
    /// Llama 3.2 1B attention (32 query heads, 8 key/value heads, head_dim 64) at 256 positions: the
    /// shape the static check sizes dynamic shared memory with (the heads of the bench's llama-3.2-1b shapes; a test checks they agree).
    /// </summary>
    public static AttentionShape StaticCheckShape { get; } = new(32, 8, 64, 256);

    /// <summary><see cref="Attention(AttentionArgs)"/>.</summary>
    public static KernelDefinition<AttentionArgs> AttentionKernel { get; } = KernelDefinition<AttentionArgs>.Explicit("attention", Family, Attention, GpuLaunch);

    /// <summary><see cref="AttentionFp32(AttentionArgs)"/>.</summary>
    public static KernelDefinition<AttentionArgs> AttentionFp32Kernel { get; } = KernelDefinition<AttentionArgs>.Explicit("attention_fp32", Family, AttentionFp32, GpuLaunch);

    /// <summary><see cref="AttentionFp32F64(AttentionArgs)"/>.</summary>
    public static KernelDefinition<AttentionArgs> AttentionFp32F64Kernel { get; } = KernelDefinition<AttentionArgs>.Explicit("attention_fp32_f64", Family, AttentionFp32F64, GpuLaunch);

    /// <summary>The definition for a cache of <paramref name="type"/>, with float64 scores (an fp32 cache only) when <paramref name="float64Scores"/>.</summary>
    public static KernelDefinition<AttentionArgs> For(KvCacheType type, bool float64Scores = false) =>
        type != KvCacheType.Fp32 ? AttentionKernel : float64Scores ? AttentionFp32F64Kernel : AttentionFp32Kernel;

    static LaunchShape GpuLaunch(KernelTuning t)
    {
        int floats = SharedFloats(StaticCheckShape, t.AttentionGroup);
        return new LaunchShape(t.AttentionGroup, floats * sizeof(float),
            $"{StaticCheckShape.GroupHeads} query heads per kv head, head_dim {StaticCheckShape.HeadDim}: {floats} floats of dynamic shared memory");
    }

    /// <summary>
    /// GQA attention for <paramref name="rows"/> query rows over the cache (decode: rows = batch
    /// with <paramref name="splits"/> &gt; 1 allowed; prefill: rows = tokens, splits = 1);
    /// <paramref name="float64Scores"/>: an fp32 cache's scores in float64 (float64 accumulation).
    /// </summary>
    public static void Attention(this LlamaKernels k, AttentionBuffers b, int rows, int splits, AttentionShape s, bool float64Scores = false)
    {
        int group = k.Tuning.AttentionGroup;
        var args = AttentionArguments(k.Tuning, b, rows, splits, s);
        var config = new KernelConfig(rows * s.KvHeads * splits, group, SharedMemoryConfig.RequestDynamic<float>(SharedFloats(s, group)));
        k.Launch(For(s.Cache.Type, float64Scores), KernelVariant.None, config, args);
    }

    /// <summary>The checked arguments of an attention launch with groups of <see cref="KernelTuning.AttentionGroup"/> threads.</summary>
    internal static AttentionArgs AttentionArguments(KernelTuning tuning, AttentionBuffers b, int rows, int splits, AttentionShape s)
    {
        int group = tuning.AttentionGroup;
        Require.That(s.Heads % s.KvHeads == 0, $"attention: heads {s.Heads} must be a multiple of kv_heads {s.KvHeads}");
        Require.That(s.HeadDim % 8 == 0, $"attention: head_dim {s.HeadDim} must be a multiple of 8");
        Require.That(splits >= 1, "attention: splits must be >= 1");
        Require.That(splits <= group, $"attention: {splits} splits exceed the group size {group} (the merge keeps one weight per split in the score slots)");
        Require.Length(b.Q, (long)rows * s.QDim, "attention q");
        Require.Length(b.Output, (long)rows * s.QDim, "attention output");
        Require.Length(b.Slots, rows, "attention slots");
        Require.Length(b.Positions, rows, "attention positions");
        Require.That(b.KCache.Length % (s.Cache.SlotElements * s.Cache.Words) == 0 && b.KCache.Length == b.VCache.Length,
            $"attention: caches of {b.KCache.Length} and {b.VCache.Length} words are not whole slots of {s.Cache.SlotElements} {s.Cache.Type.Name()} values");
        if (splits > 1)
        {
            Require.Length(b.PartialAcc, (long)rows * s.Heads * splits * s.HeadDim, "attention partial accumulators");
            Require.Length(b.PartialMl, (long)rows * s.Heads * splits * 2, "attention partial max/sum");
            Require.Length(b.Counters, (long)rows * s.KvHeads, "attention counters");
        }
        return new AttentionArgs
        {
            Q = b.Q, KCache = b.KCache.Cast<U4>(), VCache = b.VCache.Cast<uint>(), Slots = b.Slots, Positions = b.Positions, Out = b.Output,
            PartialAcc = b.PartialAcc, PartialMl = b.PartialMl, Counters = b.Counters,
            Shape = s, Splits = splits, MinChunk = tuning.AttentionMinChunk,
        };
    }

    /// <summary>Bytes one decode launch must move: q, K and V of every visible key, output.</summary>
    public static long BytesMoved(int rows, AttentionShape s, long keysPerRow) =>
        rows * (8L * s.QDim + keysPerRow * s.KvDim * 2L * 2L * s.Cache.Words);

    /// <summary>FLOPs: QK^T and PV, 2 FLOPs per multiply-add.</summary>
    public static long Flops(int rows, AttentionShape s, long keysPerRow) => rows * 4L * s.QDim * keysPerRow;

    /// <summary>
    /// Minimum bytes of a causal prefill launch over one sequence of <paramref name="tokens"/> tokens
    /// (positions 0..tokens-1): q read and output written per token, and every key/value row read once.
    /// </summary>
    public static long PrefillBytesMoved(int tokens, AttentionShape s) => tokens * (8L * s.QDim + s.KvDim * 2L * 2L * s.Cache.Words);

    /// <summary>FLOPs of a causal prefill: token p attends to p + 1 keys.</summary>
    public static long PrefillFlops(int tokens, AttentionShape s) => 4L * s.QDim * ((long)tokens * (tokens + 1) / 2);
}

/// <summary>The attention family: its kernel (the benchmark cases: <c>AttentionBenchCases</c> in kernels/IlgpuLlama.Kernels.Bench).</summary>
sealed class AttentionFamily : KernelFamily
{
    public override string Name => AttentionKernels.Family;

    public override IReadOnlyList<IKernelDefinition> Kernels => [AttentionKernels.AttentionKernel, AttentionKernels.AttentionFp32Kernel, AttentionKernels.AttentionFp32F64Kernel];
}
