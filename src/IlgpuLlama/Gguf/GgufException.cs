namespace IlgpuLlama.Gguf;

/// <summary>
/// A GGUF file is missing, malformed, inconsistent or holds what this engine cannot run. The message
/// is one line that names the file (and key or tensor, where there is one), says what is wrong and
/// how to fix it.
/// </summary>
public sealed class GgufException : Exception
{
    /// <summary>Creates the exception with a one-line message.</summary>
    public GgufException(string message) : base(message) { }

    /// <summary>Creates the exception with a one-line message and the low-level cause.</summary>
    public GgufException(string message, Exception innerException) : base(message, innerException) { }
}
