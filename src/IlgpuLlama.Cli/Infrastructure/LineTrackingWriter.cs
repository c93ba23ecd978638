using System.Text;

namespace IlgpuLlama.Cli.Infrastructure;

/// <summary>
/// A writer that passes everything through and remembers whether its last character ended a line.
/// CliRunner wraps stderr in one, so an error that follows a progress bar drawn in place
/// (<c>\r[####......] ...</c>, no newline) starts on its own line instead of being glued to the bar.
/// </summary>
public sealed class LineTrackingWriter(TextWriter inner) : TextWriter
{
    readonly Lock gate = new();
    bool midLine;

    /// <summary>The wrapped writer.</summary>
    public TextWriter Inner { get; } = inner;

    /// <summary><paramref name="writer"/>'s inner writer when it is a <see cref="LineTrackingWriter"/>, else itself.</summary>
    public static TextWriter Unwrap(TextWriter writer) => writer is LineTrackingWriter t ? t.Inner : writer;

    /// <inheritdoc/>
    public override Encoding Encoding => Inner.Encoding;

    /// <summary>Writes a newline if the last line written is unfinished (a progress bar's).</summary>
    public void EndPartialLine()
    {
        lock (gate)
        {
            if (midLine)
                Inner.WriteLine();
            midLine = false;
        }
    }

    void Track(ReadOnlySpan<char> text)
    {
        if (text.Length > 0)
            midLine = text[^1] != '\n';
    }

    /// <inheritdoc/>
    public override void Write(char value)
    {
        lock (gate)
        {
            Inner.Write(value);
            midLine = value != '\n';
        }
    }

    /// <inheritdoc/>
    public override void Write(string? value)
    {
        lock (gate)
        {
            Inner.Write(value);
            Track(value);
        }
    }

    /// <inheritdoc/>
    public override void Write(char[] buffer, int index, int count)
    {
        lock (gate)
        {
            Inner.Write(buffer, index, count);
            Track(buffer.AsSpan(index, count));
        }
    }

    /// <inheritdoc/>
    public override void Write(ReadOnlySpan<char> buffer)
    {
        lock (gate)
        {
            Inner.Write(buffer);
            Track(buffer);
        }
    }

    /// <inheritdoc/>
    public override void WriteLine()
    {
        lock (gate)
        {
            Inner.WriteLine();
            midLine = false;
        }
    }

    /// <inheritdoc/>
    public override void WriteLine(string? value)
    {
        lock (gate)
        {
            Inner.WriteLine(value);
            midLine = false;
        }
    }

    /// <inheritdoc/>
    public override void Flush() => Inner.Flush();

    /// <inheritdoc/>
    public override Task FlushAsync() => Inner.FlushAsync();
}
