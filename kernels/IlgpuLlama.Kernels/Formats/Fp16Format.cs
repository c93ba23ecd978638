namespace IlgpuLlama.Kernels;

/// <summary>IEEE binary16, the default: the only 16-bit type a P100 computes with natively.</summary>
public sealed record Fp16Format() : SixteenBitFormat("fp16", "IEEE binary16 (default; native on a P100)", typeof(Fp16Format.Device))
{
    public override double Decode(ushort bits) => (double)BitConverter.UInt16BitsToHalf(bits);

    public override ushort Encode(double value) => BitConverter.HalfToUInt16Bits((System.Half)value);

    /// <summary>IEEE binary16 on the device: one <c>cvt.f32.f16</c> per weight.</summary>
    public struct Device : IWeightFormat
    {
        public readonly int ChunkWeights => 8;
        public readonly int BlockWeights => 1;
        public readonly int ChunksInFlight => 4;
        public readonly float Low(uint pair) => Interop.IntAsFloat((ushort)(pair & 0xFFFFu));
        public readonly float High(uint pair) => Interop.IntAsFloat((ushort)(pair >> 16));
        public readonly float One(ushort bits) => Interop.IntAsFloat(bits);
        public readonly float Norm(ushort bits) => Interop.IntAsFloat(bits);
        public readonly int SideWords => 0;

        public readonly Acc8 SuperChunk<TN>(Acc8 p, U4 wa, U4 wb, ArrayView<ushort> sideA, ArrayView<ushort> sideB, ArrayView<U4> g, int c, ArrayView<F4> x, int k4, int batch)
            where TN : struct, IInputNorm => p;

        public readonly void SuperSixteen(ArrayView<U4> quants, ArrayView<ushort> side, int row, int cols, int kb, out W8 lo, out W8 hi)
        {
            lo = default;
            hi = default;
        }

        public readonly float SuperWeight(ArrayView<byte> quants, ArrayView<ushort> side, int row, int cols, int d) => 0f;

        // A 16-bit format has no blocks: the kernels read it with Low, High and One.
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
