using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;

namespace IlgpuLlama.Kernels;

/// <summary>
/// The only place the engine copies between host memory and a device view. ILGPU 1.5.3's
/// <c>CopyFromCPU/CopyToCPU(..., ref T, length)</c> turn the reference into a raw pointer and then
/// allocate before copying: a garbage collection in that window moves an unpinned managed array,
/// so an upload sends stale bytes and a download writes over whatever now lives at the old address
/// (issue 17: 306 bad uploads and 736 bad downloads in 2.8 million copies beside an allocating
/// thread, and 2 of 27 engine decode steps wrong). Here the host memory is pinned with
/// <c>fixed</c> for the whole copy, including the wait for the stream, whatever the span points
/// into (a managed array, a pooled array, a memory-mapped file). Architecture tests forbid the
/// <c>ref T</c> overloads anywhere else.
/// </summary>
public static class HostCopy
{
    /// <summary>Copies <paramref name="source"/> to the start of <paramref name="target"/> on <paramref name="stream"/> and waits for it.</summary>
    public static unsafe void Upload<T>(AcceleratorStream stream, ArrayView<T> target, ReadOnlySpan<T> source)
        where T : unmanaged
    {
        if (source.IsEmpty)
            return;
        CheckLength(target.Length, source.Length);
        fixed (T* pinned = source)
        {
            target.SubView(0, source.Length).CopyFromCPU(stream, ref Unsafe.AsRef<T>(pinned), source.Length);
            stream.Synchronize();
        }
    }

    /// <summary>Copies <paramref name="source"/> to the start of <paramref name="target"/> on the accelerator's default stream and waits for it.</summary>
    public static void Upload<T>(ArrayView<T> target, ReadOnlySpan<T> source)
        where T : unmanaged
    {
        if (!source.IsEmpty)
            Upload(target.GetAccelerator().DefaultStream, target, source);
    }

    /// <summary>Copies the start of <paramref name="source"/> into <paramref name="target"/> on <paramref name="stream"/> and waits for it.</summary>
    public static unsafe void Download<T>(AcceleratorStream stream, ArrayView<T> source, Span<T> target)
        where T : unmanaged
    {
        if (target.IsEmpty)
            return;
        CheckLength(source.Length, target.Length);
        fixed (T* pinned = target)
        {
            source.SubView(0, target.Length).CopyToCPU(stream, ref Unsafe.AsRef<T>(pinned), target.Length);
            stream.Synchronize();
        }
    }

    /// <summary>Copies the start of <paramref name="source"/> into <paramref name="target"/> on the accelerator's default stream and waits for it.</summary>
    public static void Download<T>(ArrayView<T> source, Span<T> target)
        where T : unmanaged
    {
        if (!target.IsEmpty)
            Download(source.GetAccelerator().DefaultStream, source, target);
    }

    static void CheckLength(long viewLength, int hostLength)
    {
        if (hostLength > viewLength)
            throw new ArgumentOutOfRangeException(nameof(hostLength), $"a copy of {hostLength:N0} elements does not fit a device view of {viewLength:N0}");
    }
}
