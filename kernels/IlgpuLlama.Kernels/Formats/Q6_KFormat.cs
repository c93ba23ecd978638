namespace IlgpuLlama.Kernels;

/// <summary>ggml Q6_K: 210 bytes per super-block of 256 weights (6-bit quants, 8-bit scales per 16).</summary>
public sealed record Q6_KFormat() : KQuantFormat("q6_k", "ggml Q6_K: 6-bit quants, 8-bit scales per 16 weights, fp16 per 256 (6.5625 bits per weight)", KQuantType.Q6_K, Words, typeof(Q6_KFormat.Device))
{
    /// <summary>Side words per super-block: the 64 bytes of high bits (qh), the 16 int8 scales, then d.</summary>
    public const int Words = 41;

    /// <summary>The side word where the int8 scales start.</summary>
    const int Scales = 32;

    /// <summary>The side word holding the fp16 super-block scale d.</summary>
    const int Scale = 40;

    public override string QuantsLayout => "U8 [rows, in / 2], ggml's ql (low 4 bits): per 128 weights, byte l = q_l | q_{l+64} << 4";

    public override int LargestQuant => 32 * 127;

    protected override string SideDescription => "per 256 weights: 64 bytes of high bits, 16 int8 sub-block scales, fp16 d";

    protected override int QuantsOffset => 0;

    public override bool ScalesFinite(ReadOnlySpan<ushort> side) => Finite(side[Scale]);

    /// <summary>
    /// Q6_K on the device: the quants plane is ggml's ql (128 bytes per super-block: 64-byte halves n
    /// whose byte l holds weight 128n + l in its low nibble and 128n + 64 + l in its high one), the side
    /// plane qh, the scales and d (41 words per super-block). A 128-bit chunk is 16 bytes of one half:
    /// two runs of 16 weights, each under one int8 scale; weight = d * sc * (q - 32).
    /// </summary>
    public struct Device : IWeightFormat
    {
        public readonly int ChunkWeights => 32;
        public readonly int BlockWeights => KQuants.SuperBlock;
        public readonly int ChunksInFlight => 1;
        public readonly int SideWords => Words;
        public readonly float Low(uint pair) => 0f;
        public readonly float High(uint pair) => 0f;
        public readonly float One(ushort bits) => 0f;
        public readonly float Norm(ushort bits) => Interop.IntAsFloat(bits);

        /// <summary>d times int8 scale <paramref name="i"/> of the super-block whose side words start at <paramref name="b"/>.</summary>
        static float RunScale(ArrayView<ushort> side, int b, int i) => KQuantDevice.Half(side[b + Scale]) * (sbyte)KQuantDevice.Byte(side, b + Scales, i);

        public readonly Acc8 SuperChunk<TN>(Acc8 p, U4 wa, U4 wb, ArrayView<ushort> sideA, ArrayView<ushort> sideB, ArrayView<U4> g, int c, ArrayView<F4> x, int k4, int batch)
            where TN : struct, IInputNorm
        {
            int sb = c >> 3, k = c & 7, n = k >> 2, r = k & 3;
            int wLo = sb * KQuants.SuperBlock + 128 * n + 16 * r;
            int b = sb * Words, qh = b + 16 * n + 8 * (r & 1), shift = (r >> 1) * 2;
            float sLoA = RunScale(sideA, b, 8 * n + r), sHiA = RunScale(sideA, b, 8 * n + 4 + r);
            float sLoB = RunScale(sideB, b, 8 * n + r), sHiB = RunScale(sideB, b, 8 * n + 4 + r);
            p = Word<TN>(p, wa.X, wb.X, KQuantDevice.Pair(sideA, qh), KQuantDevice.Pair(sideB, qh), shift, sLoA, sHiA, sLoB, sHiB, g, wLo, x, k4, batch);
            p = Word<TN>(p, wa.Y, wb.Y, KQuantDevice.Pair(sideA, qh + 2), KQuantDevice.Pair(sideB, qh + 2), shift, sLoA, sHiA, sLoB, sHiB, g, wLo + 4, x, k4, batch);
            p = Word<TN>(p, wa.Z, wb.Z, KQuantDevice.Pair(sideA, qh + 4), KQuantDevice.Pair(sideB, qh + 4), shift, sLoA, sHiA, sLoB, sHiB, g, wLo + 8, x, k4, batch);
            p = Word<TN>(p, wa.W, wb.W, KQuantDevice.Pair(sideA, qh + 6), KQuantDevice.Pair(sideB, qh + 6), shift, sLoA, sHiA, sLoB, sHiB, g, wLo + 12, x, k4, batch);
            return p;
        }

        /// <summary>One word of rows A and B: weights w..w+3 (low nibbles, high bits at <paramref name="shift"/>) and w+64..w+67 (high nibbles, shift + 4).</summary>
        static Acc8 Word<TN>(Acc8 p, uint a, uint b, uint highA, uint highB, int shift, float sLoA, float sHiA, float sLoB, float sHiB,
            ArrayView<U4> g, int w, ArrayView<F4> x, int k4, int batch)
            where TN : struct, IInputNorm
        {
            p = MatVecKernels.Quad<Device, TN>(p, KQuantDevice.Quad(a, 0, highA, shift, 3, 32, sLoA, 0f), KQuantDevice.Quad(b, 0, highB, shift, 3, 32, sLoB, 0f), g, w, x, w >> 2, k4, batch);
            return MatVecKernels.Quad<Device, TN>(p, KQuantDevice.Quad(a, 4, highA, shift + 4, 3, 32, sHiA, 0f), KQuantDevice.Quad(b, 4, highB, shift + 4, 3, 32, sHiB, 0f), g, w + 64, x, (w + 64) >> 2, k4, batch);
        }

        public readonly void SuperSixteen(ArrayView<U4> quants, ArrayView<ushort> side, int row, int cols, int kb, out W8 lo, out W8 hi)
        {
            // Weights kb..kb+15: 16 bytes of half n, their low nibbles (weights 128n + b0 ..) or high ones (128n + 64 + b0 ..).
            int sb = kb >> 8, w = kb & 255, n = w >> 7, half = (w >> 6) & 1, b0 = w & 63;
            U4 q = quants[row * (cols >> 5) + sb * 8 + 4 * n + (b0 >> 4)];
            int b = (row * (cols >> 8) + sb) * Words, qh = b + 16 * n + ((b0 & 31) >> 1);
            int shift = (b0 >> 5) * 2 + 4 * half;
            float s = RunScale(side, b, w >> 4);
            lo = KQuantDevice.Eight(q.X, q.Y, 4 * half, KQuantDevice.Pair(side, qh), KQuantDevice.Pair(side, qh + 2), shift, 3, 32, s, 0f);
            hi = KQuantDevice.Eight(q.Z, q.W, 4 * half, KQuantDevice.Pair(side, qh + 4), KQuantDevice.Pair(side, qh + 6), shift, 3, 32, s, 0f);
        }

        public readonly float SuperWeight(ArrayView<byte> quants, ArrayView<ushort> side, int row, int cols, int d)
        {
            int sb = d >> 8, w = d & 255, n = w >> 7, t = (w >> 5) & 3, l = w & 31;
            int b = (row * (cols >> 8) + sb) * Words;
            int low = (quants[row * (cols >> 1) + sb * 128 + 64 * n + l + 32 * (t & 1)] >> (4 * (t >> 1))) & 0xF;
            int q = (low | (((KQuantDevice.Byte(side, b, 32 * n + l) >> (2 * t)) & 3) << 4)) - 32;
            return RunScale(side, b, w >> 4) * q;
        }

        // A K-quant is read with the Super* members.
        public readonly Acc8 BlockChunk<TN>(Acc8 p, U4 wa, U4 wb, ArrayView<U4> g, int c, ArrayView<F4> x, int k4, int batch)
            where TN : struct, IInputNorm => p;

        public readonly void DequantizeSixteen(U4 q, int kb, float d, out W8 lo, out W8 hi)
        {
            lo = default;
            hi = default;
        }

        public readonly float Quant(ArrayView<byte> quants, int row, int cols, int d, int block, int j) => 0f;
    }
}
