using System.Buffers.Binary;

namespace IlgpuLlama.Kernels;

/// <summary>The ggml K-quant types <see cref="KQuants"/> implements.</summary>
public enum KQuantType
{
    /// <summary>ggml Q4_K: 144 bytes per 256 weights (4.5 bits per weight).</summary>
    Q4_K,

    /// <summary>ggml Q5_K: 176 bytes per 256 weights (5.5 bits per weight).</summary>
    Q5_K,

    /// <summary>ggml Q6_K: 210 bytes per 256 weights (6.5625 bits per weight).</summary>
    Q6_K,
}

/// <summary>
/// ggml's K-quant super-block formats Q4_K, Q5_K and Q6_K on the host, bit for bit: a port of
/// <c>quantize_row_q4_K_ref</c>, <c>quantize_row_q5_K_ref</c>, <c>quantize_row_q6_K_ref</c>,
/// <c>dequantize_row_q4_K</c>, <c>dequantize_row_q5_K</c>, <c>dequantize_row_q6_K</c> and their helpers
/// <c>make_qkx2_quants</c>, <c>make_qx_quants</c>, <c>nearest_int</c> and <c>get_scale_min_k4</c> of
/// ggml/src/ggml-quants.c (llama.cpp commit c392e5094dea). Every step is the same fp32 operation in the same order as
/// ggml's (divisions stay divisions, products keep their association), so that the search over
/// candidate scales picks the same candidate and the bytes come out the same; fp16 conversion is
/// IEEE round-to-nearest-even, as ggml's GGML_FP32_TO_FP16 with F16C. The layouts are ggml's,
/// little-endian; tests/fixtures/quant/ggml-kquant-blocks.jsonl holds blocks ggml itself encoded.
/// </summary>
public static class KQuants
{
    /// <summary>Weights per super-block (ggml's QK_K).</summary>
    public const int SuperBlock = 256;

    /// <summary>Bytes per super-block of each type.</summary>
    public const int Q4_KBytes = 144, Q5_KBytes = 176, Q6_KBytes = 210;

    const int ScaleBytes = 12; // ggml's K_SCALE_SIZE
    const float GroupMaxEps = 1e-15f; // ggml's GROUP_MAX_EPS

    /// <summary>Bytes per super-block of <paramref name="t"/>.</summary>
    public static int BlockBytes(KQuantType t) => t switch
    {
        KQuantType.Q4_K => Q4_KBytes,
        KQuantType.Q5_K => Q5_KBytes,
        KQuantType.Q6_K => Q6_KBytes,
        _ => throw new ArgumentOutOfRangeException(nameof(t), t, "not a K-quant type"),
    };

    /// <summary>
    /// Quantises 256 values into one Q4_K block of 144 bytes (ggml <c>quantize_row_q4_K_ref</c>).
    /// Layout: bytes 0-1 <c>d</c> and 2-3 <c>dmin</c> (fp16), bytes 4-15 the eight 6-bit sub-block
    /// scales <c>sc_j</c> and mins <c>m_j</c> packed as in <see cref="ScaleMin"/>, bytes 16-143 the
    /// 4-bit quants: sub-blocks of 32 weights are paired, and byte 16 + 32g + l holds weight 64g + l in
    /// its low nibble and weight 64g + 32 + l in its high nibble (g = 0..3, l = 0..31). Weight i of
    /// sub-block j = i / 32 is <c>d * sc_j * q_i - dmin * m_j</c>.
    /// </summary>
    public static void QuantizeQ4_K(ReadOnlySpan<float> x, Span<byte> block)
    {
        CheckBlock(x.Length, block.Length, Q4_KBytes);
        Span<byte> l = stackalloc byte[SuperBlock];
        QuantizeScalesAndMins(x, block, l, 15, -1f, 20);
        Span<byte> q = block.Slice(4 + ScaleBytes, SuperBlock / 2);
        for (int j = 0; j < SuperBlock; j += 64)
        {
            for (int i = 0; i < 32; i++)
                q[j / 2 + i] = (byte)(l[j + i] | (l[j + i + 32] << 4));
        }
    }

    /// <summary>
    /// Quantises 256 values into one Q5_K block of 176 bytes (ggml <c>quantize_row_q5_K_ref</c>).
    /// Layout: bytes 0-1 <c>d</c> and 2-3 <c>dmin</c> (fp16), bytes 4-15 the eight 6-bit sub-block
    /// scales and mins (as Q4_K), bytes 16-47 the high bits <c>qh</c>, bytes 48-175 the low nibbles
    /// <c>qs</c>: for g = 0..3 and l = 0..31, weight 64g + l is the low nibble of qs[32g + l] plus 16
    /// if bit 2g of qh[l] is set, weight 64g + 32 + l the high nibble of qs[32g + l] plus 16 if bit
    /// 2g + 1 of qh[l] is set. Weight i of sub-block j = i / 32 is <c>d * sc_j * q_i - dmin * m_j</c>.
    /// </summary>
    public static void QuantizeQ5_K(ReadOnlySpan<float> x, Span<byte> block)
    {
        CheckBlock(x.Length, block.Length, Q5_KBytes);
        Span<byte> l = stackalloc byte[SuperBlock];
        QuantizeScalesAndMins(x, block, l, 31, -0.5f, 15);
        Span<byte> qh = block.Slice(4 + ScaleBytes, SuperBlock / 8);
        Span<byte> ql = block.Slice(4 + ScaleBytes + SuperBlock / 8, SuperBlock / 2);
        qh.Clear();
        int m1 = 1, m2 = 2;
        for (int n = 0; n < SuperBlock; n += 64)
        {
            for (int j = 0; j < 32; j++)
            {
                int l1 = l[n + j];
                if (l1 > 15)
                {
                    l1 -= 16;
                    qh[j] |= (byte)m1;
                }
                int l2 = l[n + j + 32];
                if (l2 > 15)
                {
                    l2 -= 16;
                    qh[j] |= (byte)m2;
                }
                ql[n / 2 + j] = (byte)(l1 | (l2 << 4));
            }
            m1 <<= 2;
            m2 <<= 2;
        }
    }

    /// <summary>
    /// Quantises 256 values into one Q6_K block of 210 bytes (ggml <c>quantize_row_q6_K_ref</c>).
    /// Layout: bytes 0-127 <c>ql</c> (low 4 bits), 128-191 <c>qh</c> (high 2 bits), 192-207 sixteen
    /// int8 scales (one per 16 weights), 208-209 <c>d</c> (fp16). For half h = 0..1 and l = 0..31, with
    /// a = ql[64h + l], b = ql[64h + 32 + l] and c = qh[32h + l]: weight 128h + l is
    /// <c>(a &amp; 15) | (c &amp; 3) &lt;&lt; 4</c>, weight 128h + 32 + l <c>(b &amp; 15) | (c &gt;&gt; 2 &amp; 3) &lt;&lt; 4</c>,
    /// weight 128h + 64 + l <c>a &gt;&gt; 4 | (c &gt;&gt; 4 &amp; 3) &lt;&lt; 4</c>, weight 128h + 96 + l
    /// <c>b &gt;&gt; 4 | (c &gt;&gt; 6) &lt;&lt; 4</c>, each a 6-bit q; weight i is <c>d * scales[i / 16] * (q - 32)</c>.
    /// </summary>
    public static void QuantizeQ6_K(ReadOnlySpan<float> x, Span<byte> block)
    {
        CheckBlock(x.Length, block.Length, Q6_KBytes);
        Span<sbyte> l = stackalloc sbyte[SuperBlock];
        Span<float> scales = stackalloc float[SuperBlock / 16];

        float maxScale = 0, maxAbsScale = 0;
        for (int ib = 0; ib < SuperBlock / 16; ib++)
        {
            float scale = MakeQxQuants(x.Slice(16 * ib, 16), 32, l.Slice(16 * ib, 16));
            scales[ib] = scale;
            float absScale = MathF.Abs(scale);
            if (absScale > maxAbsScale)
            {
                maxAbsScale = absScale;
                maxScale = scale;
            }
        }

        if (maxAbsScale < GroupMaxEps)
        {
            block.Clear();
            WriteHalf(block, 208, 0f);
            return;
        }

        Span<byte> ql = block[..128];
        Span<byte> qh = block.Slice(128, 64);
        Span<byte> sc = block.Slice(192, 16);
        float iscale = -128f / maxScale;
        WriteHalf(block, 208, 1 / iscale);
        for (int ib = 0; ib < SuperBlock / 16; ib++)
            sc[ib] = unchecked((byte)(sbyte)Math.Min(127, NearestInt(iscale * scales[ib])));

        float dBlock = ReadHalf(block, 208);
        for (int j = 0; j < SuperBlock / 16; j++)
        {
            float d = dBlock * unchecked((sbyte)sc[j]);
            if (d == 0)
                continue;
            for (int ii = 0; ii < 16; ii++)
            {
                int q = NearestInt(x[16 * j + ii] / d);
                q = Math.Max(-32, Math.Min(31, q));
                l[16 * j + ii] = (sbyte)(q + 32);
            }
        }

        for (int j = 0; j < SuperBlock; j += 128)
        {
            int o = j / 2, h = j / 4;
            for (int i = 0; i < 32; i++)
            {
                int q1 = l[j + i] & 0xF;
                int q2 = l[j + i + 32] & 0xF;
                int q3 = l[j + i + 64] & 0xF;
                int q4 = l[j + i + 96] & 0xF;
                ql[o + i] = (byte)(q1 | (q3 << 4));
                ql[o + i + 32] = (byte)(q2 | (q4 << 4));
                qh[h + i] = (byte)((l[j + i] >> 4) | ((l[j + i + 32] >> 4) << 2) | ((l[j + i + 64] >> 4) << 4) | ((l[j + i + 96] >> 4) << 6));
            }
        }
    }

    /// <summary>Dequantises one 144-byte Q4_K block (layout at <see cref="QuantizeQ4_K"/>) into 256 values, as ggml <c>dequantize_row_q4_K</c>.</summary>
    public static void DequantizeQ4_K(ReadOnlySpan<byte> block, Span<float> y)
    {
        CheckBlock(y.Length, block.Length, Q4_KBytes);
        float d = ReadHalf(block, 0), min = ReadHalf(block, 2);
        ReadOnlySpan<byte> scales = block.Slice(4, ScaleBytes);
        ReadOnlySpan<byte> q = block.Slice(4 + ScaleBytes, SuperBlock / 2);
        for (int j = 0, g = 0; j < SuperBlock; j += 64, g++)
        {
            var (sc1, m1) = ScaleMin(2 * g, scales);
            float d1 = d * sc1, mm1 = min * m1;
            var (sc2, m2) = ScaleMin(2 * g + 1, scales);
            float d2 = d * sc2, mm2 = min * m2;
            for (int l = 0; l < 32; l++)
                y[j + l] = d1 * (q[32 * g + l] & 0xF) - mm1;
            for (int l = 0; l < 32; l++)
                y[j + 32 + l] = d2 * (q[32 * g + l] >> 4) - mm2;
        }
    }

    /// <summary>Dequantises one 176-byte Q5_K block (layout at <see cref="QuantizeQ5_K"/>) into 256 values, as ggml <c>dequantize_row_q5_K</c>.</summary>
    public static void DequantizeQ5_K(ReadOnlySpan<byte> block, Span<float> y)
    {
        CheckBlock(y.Length, block.Length, Q5_KBytes);
        float d = ReadHalf(block, 0), min = ReadHalf(block, 2);
        ReadOnlySpan<byte> scales = block.Slice(4, ScaleBytes);
        ReadOnlySpan<byte> qh = block.Slice(4 + ScaleBytes, SuperBlock / 8);
        ReadOnlySpan<byte> ql = block.Slice(4 + ScaleBytes + SuperBlock / 8, SuperBlock / 2);
        int u1 = 1, u2 = 2;
        for (int j = 0, g = 0; j < SuperBlock; j += 64, g++)
        {
            var (sc1, m1) = ScaleMin(2 * g, scales);
            float d1 = d * sc1, mm1 = min * m1;
            var (sc2, m2) = ScaleMin(2 * g + 1, scales);
            float d2 = d * sc2, mm2 = min * m2;
            for (int l = 0; l < 32; l++)
                y[j + l] = d1 * ((ql[32 * g + l] & 0xF) + ((qh[l] & u1) != 0 ? 16 : 0)) - mm1;
            for (int l = 0; l < 32; l++)
                y[j + 32 + l] = d2 * ((ql[32 * g + l] >> 4) + ((qh[l] & u2) != 0 ? 16 : 0)) - mm2;
            u1 <<= 2;
            u2 <<= 2;
        }
    }

    /// <summary>Dequantises one 210-byte Q6_K block (layout at <see cref="QuantizeQ6_K"/>) into 256 values, as ggml <c>dequantize_row_q6_K</c>.</summary>
    public static void DequantizeQ6_K(ReadOnlySpan<byte> block, Span<float> y)
    {
        CheckBlock(y.Length, block.Length, Q6_KBytes);
        float d = ReadHalf(block, 208);
        for (int n = 0, h = 0; n < SuperBlock; n += 128, h++)
        {
            ReadOnlySpan<byte> ql = block.Slice(64 * h, 64);
            ReadOnlySpan<byte> qh = block.Slice(128 + 32 * h, 32);
            ReadOnlySpan<byte> sc = block.Slice(192 + 8 * h, 8);
            for (int l = 0; l < 32; l++)
            {
                int isc = l / 16;
                int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                // (d * scale) * q, in that order, as ggml.
                y[n + l] = d * unchecked((sbyte)sc[isc]) * q1;
                y[n + l + 32] = d * unchecked((sbyte)sc[isc + 2]) * q2;
                y[n + l + 64] = d * unchecked((sbyte)sc[isc + 4]) * q3;
                y[n + l + 96] = d * unchecked((sbyte)sc[isc + 6]) * q4;
            }
        }
    }

    /// <summary>
    /// Quantises a row whose length is a multiple of <see cref="SuperBlock"/> into consecutive
    /// blocks of <paramref name="type"/> (<paramref name="dst"/> exactly length / 256 blocks).
    /// </summary>
    public static void QuantizeRow(KQuantType type, ReadOnlySpan<float> row, Span<byte> dst)
    {
        int bytes = BlockBytes(type);
        int blocks = CheckRow(row.Length, dst.Length, bytes, nameof(dst));
        for (int b = 0; b < blocks; b++)
        {
            ReadOnlySpan<float> x = row.Slice(b * SuperBlock, SuperBlock);
            Span<byte> block = dst.Slice(b * bytes, bytes);
            switch (type)
            {
                case KQuantType.Q4_K: QuantizeQ4_K(x, block); break;
                case KQuantType.Q5_K: QuantizeQ5_K(x, block); break;
                default: QuantizeQ6_K(x, block); break;
            }
        }
    }

    /// <summary>
    /// Dequantises consecutive blocks of <paramref name="type"/> into a row whose length is a
    /// multiple of <see cref="SuperBlock"/> (<paramref name="src"/> exactly length / 256 blocks).
    /// </summary>
    public static void DequantizeRow(KQuantType type, ReadOnlySpan<byte> src, Span<float> row)
    {
        int bytes = BlockBytes(type);
        int blocks = CheckRow(row.Length, src.Length, bytes, nameof(src));
        for (int b = 0; b < blocks; b++)
        {
            ReadOnlySpan<byte> block = src.Slice(b * bytes, bytes);
            Span<float> y = row.Slice(b * SuperBlock, SuperBlock);
            switch (type)
            {
                case KQuantType.Q4_K: DequantizeQ4_K(block, y); break;
                case KQuantType.Q5_K: DequantizeQ5_K(block, y); break;
                default: DequantizeQ6_K(block, y); break;
            }
        }
    }

    /// <summary>
    /// The 6-bit scale and min of sub-block <paramref name="j"/> (0..7) from the 12 packed bytes
    /// (ggml <c>get_scale_min_k4</c>): for j &lt; 4, scale = s[j] &amp; 63 and min = s[j + 4] &amp; 63; for
    /// j ≥ 4, scale = (s[j + 4] &amp; 15) | (s[j - 4] &gt;&gt; 6) &lt;&lt; 4 and min = (s[j + 4] &gt;&gt; 4) | (s[j] &gt;&gt; 6) &lt;&lt; 4.
    /// </summary>
    public static (byte Scale, byte Min) ScaleMin(int j, ReadOnlySpan<byte> scales) => j < 4
        ? ((byte)(scales[j] & 63), (byte)(scales[j + 4] & 63))
        : ((byte)((scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4)), (byte)((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4)));

    // ggml nearest_int: round to nearest (ties to even) by adding 1.5 * 2^23 and reading the mantissa;
    // exact for |fval| <= 4194303 (ggml asserts that; here larger values wrap as the same bits do).
    static int NearestInt(float fval)
    {
        float val = fval + 12582912f;
        int i = BitConverter.SingleToInt32Bits(val);
        return (i & 0x007FFFFF) - 0x00400000;
    }

    // The shared body of quantize_row_q4_K_ref and quantize_row_q5_K_ref: per-sub-block scales and
    // mins by make_qkx2_quants, their 6-bit packing, d and dmin, and the final quants into l.
    static void QuantizeScalesAndMins(ReadOnlySpan<float> x, Span<byte> block, Span<byte> l, int nmax, float rmin, int nstep)
    {
        Span<float> weights = stackalloc float[32];
        Span<byte> laux = stackalloc byte[32];
        Span<float> mins = stackalloc float[SuperBlock / 32];
        Span<float> scales = stackalloc float[SuperBlock / 32];

        float maxScale = 0, maxMin = 0;
        for (int j = 0; j < SuperBlock / 32; j++)
        {
            ReadOnlySpan<float> xj = x.Slice(32 * j, 32);
            float sumX2 = 0;
            for (int i = 0; i < 32; i++)
                sumX2 += xj[i] * xj[i];
            float avX = MathF.Sqrt(sumX2 / 32);
            for (int i = 0; i < 32; i++)
                weights[i] = avX + MathF.Abs(xj[i]);
            scales[j] = MakeQkx2Quants(nmax, xj, weights, l.Slice(32 * j, 32), out mins[j], laux, rmin, 0.1f, nstep);
            if (scales[j] > maxScale)
                maxScale = scales[j];
            if (mins[j] > maxMin)
                maxMin = mins[j];
        }

        Span<byte> s = block.Slice(4, ScaleBytes);
        float invScale = maxScale > 0 ? 63f / maxScale : 0f;
        float invMin = maxMin > 0 ? 63f / maxMin : 0f;
        for (int j = 0; j < SuperBlock / 32; j++)
        {
            // ggml stores nearest_int into a uint8_t before clamping to 63.
            byte ls = Math.Min((byte)63, unchecked((byte)NearestInt(invScale * scales[j])));
            byte lm = Math.Min((byte)63, unchecked((byte)NearestInt(invMin * mins[j])));
            if (j < 4)
            {
                s[j] = ls;
                s[j + 4] = lm;
            }
            else
            {
                s[j + 4] = (byte)((ls & 0xF) | ((lm & 0xF) << 4));
                s[j - 4] |= (byte)((ls >> 4) << 6);
                s[j] |= (byte)((lm >> 4) << 6);
            }
        }
        WriteHalf(block, 0, maxScale / 63f);
        WriteHalf(block, 2, maxMin / 63f);

        float dBlock = ReadHalf(block, 0), dminBlock = ReadHalf(block, 2);
        for (int j = 0; j < SuperBlock / 32; j++)
        {
            var (sc, m) = ScaleMin(j, s);
            float d = dBlock * sc;
            if (d == 0)
                continue; // this sub-block keeps make_qkx2_quants' quants
            float dm = dminBlock * m;
            for (int ii = 0; ii < 32; ii++)
            {
                int q = NearestInt((x[32 * j + ii] + dm) / d);
                l[32 * j + ii] = (byte)Math.Max(0, Math.Min(nmax, q));
            }
        }
    }

    // ggml make_qkx2_quants with use_mad = false: a weighted least-squares fit of x ≈ scale * L - theMin
    // over the candidate inverse scales (rmin + rdelta * is + nmax) / (max - min), is = 0..nstep.
    static float MakeQkx2Quants(int nmax, ReadOnlySpan<float> x, ReadOnlySpan<float> weights, Span<byte> l, out float theMin,
        Span<byte> laux, float rmin, float rdelta, int nstep)
    {
        int n = x.Length;
        float min = x[0], max = x[0];
        float sumW = weights[0];
        float sumX = sumW * x[0];
        for (int i = 1; i < n; i++)
        {
            if (x[i] < min) min = x[i];
            if (x[i] > max) max = x[i];
            float w = weights[i];
            sumW += w;
            sumX += w * x[i];
        }
        if (min > 0) min = 0;
        if (max == min)
        {
            l[..n].Clear();
            theMin = -min;
            return 0f;
        }
        float iscale = nmax / (max - min);
        float scale = 1 / iscale;
        float bestMad = 0;
        for (int i = 0; i < n; i++)
        {
            int q = NearestInt(iscale * (x[i] - min));
            l[i] = (byte)Math.Max(0, Math.Min(nmax, q));
            float diff = scale * l[i] + min - x[i];
            diff = diff * diff;
            float w = weights[i];
            bestMad += w * diff;
        }
        if (nstep < 1)
        {
            theMin = -min;
            return scale;
        }
        for (int @is = 0; @is <= nstep; @is++)
        {
            iscale = (rmin + rdelta * @is + nmax) / (max - min);
            float sumL = 0, sumL2 = 0, sumXL = 0;
            for (int i = 0; i < n; i++)
            {
                int q = NearestInt(iscale * (x[i] - min));
                q = Math.Max(0, Math.Min(nmax, q));
                laux[i] = (byte)q;
                float w = weights[i];
                sumL += w * q;
                sumL2 += w * q * q;
                sumXL += w * q * x[i];
            }
            float dd = sumW * sumL2 - sumL * sumL;
            if (dd > 0)
            {
                float thisScale = (sumW * sumXL - sumX * sumL) / dd;
                float thisMin = (sumL2 * sumX - sumL * sumXL) / dd;
                if (thisMin > 0)
                {
                    thisMin = 0;
                    thisScale = sumXL / sumL2;
                }
                float mad = 0;
                for (int i = 0; i < n; i++)
                {
                    float diff = thisScale * laux[i] + thisMin - x[i];
                    diff = diff * diff;
                    float w = weights[i];
                    mad += w * diff;
                }
                if (mad < bestMad)
                {
                    laux[..n].CopyTo(l);
                    bestMad = mad;
                    scale = thisScale;
                    min = thisMin;
                }
            }
        }
        theMin = -min;
        return scale;
    }

    // ggml make_qx_quants with rmse_type = 1 and no importance weights (w = x * x), as quantize_row_q6_K_ref
    // calls it: l gets nmax + q, q in [-nmax, nmax - 1]; returns the scale (negative where the largest-magnitude value is positive).
    static float MakeQxQuants(ReadOnlySpan<float> x, int nmax, Span<sbyte> l)
    {
        int n = x.Length;
        float max = 0, amax = 0;
        for (int i = 0; i < n; i++)
        {
            float ax = MathF.Abs(x[i]);
            if (ax > amax)
            {
                amax = ax;
                max = x[i];
            }
        }
        if (amax < GroupMaxEps)
        {
            l[..n].Clear();
            return 0f;
        }
        float iscale = -nmax / max;
        float sumlx = 0, suml2 = 0;
        for (int i = 0; i < n; i++)
        {
            int q = NearestInt(iscale * x[i]);
            q = Math.Max(-nmax, Math.Min(nmax - 1, q));
            l[i] = (sbyte)(q + nmax);
            float w = x[i] * x[i];
            sumlx += w * x[i] * q;
            suml2 += w * q * q;
        }
        float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
        float best = scale * sumlx;
        for (int @is = -9; @is <= 9; @is++)
        {
            if (@is == 0)
                continue;
            iscale = -(nmax + 0.1f * @is) / max;
            sumlx = suml2 = 0;
            for (int i = 0; i < n; i++)
            {
                int q = NearestInt(iscale * x[i]);
                q = Math.Max(-nmax, Math.Min(nmax - 1, q));
                float w = x[i] * x[i];
                sumlx += w * x[i] * q;
                suml2 += w * q * q;
            }
            if (suml2 > 0 && sumlx * sumlx > best * suml2)
            {
                for (int i = 0; i < n; i++)
                {
                    int q = NearestInt(iscale * x[i]);
                    l[i] = (sbyte)(nmax + Math.Max(-nmax, Math.Min(nmax - 1, q)));
                }
                scale = sumlx / suml2;
                best = scale * sumlx;
            }
        }
        return scale;
    }

    static void WriteHalf(Span<byte> block, int offset, float value) =>
        BinaryPrimitives.WriteUInt16LittleEndian(block[offset..], WeightFormat.Fp16.Encode(value));

    static float ReadHalf(ReadOnlySpan<byte> block, int offset) =>
        (float)WeightFormat.Fp16.Decode(BinaryPrimitives.ReadUInt16LittleEndian(block[offset..]));

    static void CheckBlock(int values, int bytes, int blockBytes)
    {
        if (values != SuperBlock)
            throw new ArgumentException($"a K-quant block holds {SuperBlock} values, not {values}");
        if (bytes != blockBytes)
            throw new ArgumentException($"this K-quant block is {blockBytes} bytes, not {bytes}");
    }

    static int CheckRow(int length, int bytes, int blockBytes, string bytesName)
    {
        if (length % SuperBlock != 0)
            throw new ArgumentException($"row length {length} is not a multiple of {SuperBlock}");
        int blocks = length / SuperBlock;
        if (bytes != blocks * blockBytes)
            throw new ArgumentException($"{blocks} blocks of {blockBytes} bytes need {blocks * blockBytes} bytes, not {bytes}", bytesName);
        return blocks;
    }
}
