namespace IlgpuLlama.Kernels;

/// <summary>bfloat16, kept exactly as Llama checkpoints store it.</summary>
public sealed record Bf16Format() : SixteenBitFormat("bf16", "bfloat16, as Llama checkpoints store it", typeof(Bf16Format.Device))
{
    public override double Decode(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    public override ushort Encode(double value)
    {
        uint bits = BitConverter.SingleToUInt32Bits((float)value);
        if (float.IsNaN((float)value))
            return (ushort)((bits >> 16) | 0x40);
        uint rounding = 0x7FFF + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }

    /// <summary>bfloat16 on the device: the top half of an fp32, so widening is a shift or a mask.</summary>
    public struct Device : IWeightFormat
    {
        public readonly int ChunkWeights => 8;
        public readonly int BlockWeights => 1;
        public readonly int ChunksInFlight => 4;
        public readonly float Low(uint pair) => Interop.IntAsFloat(pair << 16);
        public readonly float High(uint pair) => Interop.IntAsFloat(pair & 0xFFFF0000u);
        public readonly float One(ushort bits) => Interop.IntAsFloat((uint)bits << 16);
        public readonly float Norm(ushort bits) => Interop.IntAsFloat((uint)bits << 16);
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
