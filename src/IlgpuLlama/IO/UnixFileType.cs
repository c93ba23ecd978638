namespace IlgpuLlama.IO;

/// <summary>The S_IFMT bits of stat(2).</summary>
internal static class UnixFileType
{
    public const int Regular = 0x8000;
    public const int Fifo = 0x1000;
    public const int CharacterDevice = 0x2000;
    public const int Directory = 0x4000;
    public const int BlockDevice = 0x6000;
    public const int Socket = 0xC000;

    /// <summary>What a file type is called in a message ("a FIFO").</summary>
    public static string Describe(int type) => type switch
    {
        Fifo => "a FIFO",
        CharacterDevice => "a character device",
        BlockDevice => "a block device",
        Socket => "a socket",
        Directory => "a directory",
        _ => "a special file",
    };

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "stat", SetLastError = true)]
    static extern int Stat(string path, byte[] buffer);

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "__xstat", SetLastError = true)]
    static extern int XStat(int version, string path, byte[] buffer);

    /// <summary>The file type of <paramref name="path"/>, or null when stat cannot tell (the write then proceeds as for a regular file).</summary>
    public static int? Of(string path)
    {
        if (!OperatingSystem.IsLinux())
            return null;
        var buffer = new byte[256];
        int rc;
        try
        {
            try
            {
                rc = Stat(path, buffer);
            }
            catch (EntryPointNotFoundException)
            {
                rc = XStat(1, path, buffer); // glibc before 2.33 exports stat only as __xstat
            }
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return null;
        }
        if (rc != 0)
            return null;
        // struct stat: st_mode is at offset 24 on x86-64 (after st_dev, st_ino, st_nlink) and 16 on arm64.
        int offset = System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture == System.Runtime.InteropServices.Architecture.X64 ? 24 : 16;
        return BitConverter.ToInt32(buffer, offset) & 0xF000;
    }
}
