namespace IlgpuLlama.Safetensors;

/// <summary>
/// Where one tensor lives: its dtype, shape and the absolute byte range inside <see cref="FilePath"/>.
/// Offsets are absolute (not relative to the data area) so a consumer can map or seek without
/// knowing the header length.
/// </summary>
/// <param name="Name">Tensor name as written in the header.</param>
/// <param name="DType">Parsed dtype; <see cref="SafetensorsDType.Other"/> for dtypes this engine does not read.</param>
/// <param name="DTypeName">The dtype string exactly as written in the header.</param>
/// <param name="Shape">Dimensions, outermost first; empty for a scalar.</param>
/// <param name="FileOffset">Absolute byte offset of the first element in the file.</param>
/// <param name="ByteLength">Length of the tensor's data in bytes.</param>
/// <param name="FilePath">The file that holds the data.</param>
public sealed record TensorInfo(
    string Name,
    SafetensorsDType DType,
    string DTypeName,
    IReadOnlyList<long> Shape,
    long FileOffset,
    long ByteLength,
    string FilePath)
{
    /// <summary>Product of <see cref="Shape"/> (1 for a scalar).</summary>
    public long ElementCount
    {
        get
        {
            long n = 1;
            foreach (var d in Shape) n = checked(n * d);
            return n;
        }
    }

    /// <summary>Shape in the usual [a, b] form, for messages.</summary>
    public string ShapeText => FormatShape(Shape);

    internal static string FormatShape(IReadOnlyList<long> shape) => "[" + string.Join(", ", shape) + "]";
}
