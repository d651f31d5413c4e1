import org.objectweb.asm.Handle;
import org.objectweb.asm.Opcodes;
import org.objectweb.asm.Type;
import org.objectweb.asm.tree.ClassNode;
import org.objectweb.asm.tree.FieldInsnNode;
import org.objectweb.asm.tree.FieldNode;
import org.objectweb.asm.tree.InsnList;
import org.objectweb.asm.tree.InsnNode;
import org.objectweb.asm.tree.InvokeDynamicInsnNode;
import org.objectweb.asm.tree.MethodInsnNode;
import org.objectweb.asm.tree.MethodNode;
import org.objectweb.asm.tree.TypeInsnNode;
import org.objectweb.asm.tree.VarInsnNode;

/**
 * What LambdaMetafactory.metafactory makes at run time for a non-capturing lambda with a static body,
 * written as a class file (Downgrade checked the call site first): a final class implementing the
 * functional interface, with one instance in its static field INSTANCE and the interface method calling
 * the body with LambdaMetafactory's conversions (casts, boxing, unboxing).
 */
final class LambdaClass {
    static final String FIELD = "INSTANCE";

    private LambdaClass() {
    }

    static ClassNode make(String name, String sourceFile, InvokeDynamicInsnNode indy, String at)
            throws Downgrade.Refusal {
        Type sam = (Type) indy.bsmArgs[0];
        Handle impl = (Handle) indy.bsmArgs[1];
        String iface = Type.getReturnType(indy.desc).getInternalName();
        ClassNode g = new ClassNode();
        g.version = Opcodes.V1_8;
        g.access = Opcodes.ACC_FINAL | Opcodes.ACC_SUPER | Opcodes.ACC_SYNTHETIC;
        g.name = name;
        g.superName = "java/lang/Object";
        g.interfaces.add(iface);
        g.sourceFile = sourceFile;
        String fieldDesc = "L" + iface + ";";
        g.fields.add(new FieldNode(Opcodes.ACC_STATIC | Opcodes.ACC_FINAL, FIELD, fieldDesc, null, null));

        MethodNode init = new MethodNode(Opcodes.ACC_PRIVATE, "<init>", "()V", null, null);
        init.instructions.add(new VarInsnNode(Opcodes.ALOAD, 0));
        init.instructions.add(new MethodInsnNode(Opcodes.INVOKESPECIAL, "java/lang/Object", "<init>", "()V", false));
        init.instructions.add(new InsnNode(Opcodes.RETURN));
        g.methods.add(init);

        MethodNode clinit = new MethodNode(Opcodes.ACC_STATIC, "<clinit>", "()V", null, null);
        clinit.instructions.add(new TypeInsnNode(Opcodes.NEW, name));
        clinit.instructions.add(new InsnNode(Opcodes.DUP));
        clinit.instructions.add(new MethodInsnNode(Opcodes.INVOKESPECIAL, name, "<init>", "()V", false));
        clinit.instructions.add(new FieldInsnNode(Opcodes.PUTSTATIC, name, FIELD, fieldDesc));
        clinit.instructions.add(new InsnNode(Opcodes.RETURN));
        g.methods.add(clinit);

        MethodNode body = new MethodNode(Opcodes.ACC_PUBLIC, indy.name, sam.getDescriptor(), null, null);
        InsnList code = body.instructions;
        Type[] from = sam.getArgumentTypes();
        Type[] to = Type.getArgumentTypes(impl.getDesc());
        if (from.length != to.length) {
            throw new Downgrade.Refusal(at + " has a lambda whose body takes " + to.length + " arguments for "
                    + from.length + " (a method reference with a receiver?)");
        }
        int slot = 1;
        for (int k = 0; k < from.length; k++) {
            code.add(new VarInsnNode(from[k].getOpcode(Opcodes.ILOAD), slot));
            slot += from[k].getSize();
            adapt(code, from[k], to[k], at);
        }
        code.add(new MethodInsnNode(Opcodes.INVOKESTATIC, impl.getOwner(), impl.getName(), impl.getDesc(),
                impl.isInterface()));
        Type ret = sam.getReturnType();
        Type implRet = Type.getReturnType(impl.getDesc());
        if (ret.getSort() == Type.VOID) {
            if (implRet.getSort() != Type.VOID) {
                code.add(new InsnNode(implRet.getSize() == 2 ? Opcodes.POP2 : Opcodes.POP));
            }
            code.add(new InsnNode(Opcodes.RETURN));
        } else {
            adapt(code, implRet, ret, at);
            code.add(new InsnNode(ret.getOpcode(Opcodes.IRETURN)));
        }
        g.methods.add(body);
        return g;
    }

    /** Converts the value on the stack from type a to type b, as LambdaMetafactory would. */
    static void adapt(InsnList code, Type a, Type b, String at) throws Downgrade.Refusal {
        if (a.equals(b)) {
            return;
        }
        boolean aRef = a.getSort() >= Type.ARRAY, bRef = b.getSort() >= Type.ARRAY;
        if (aRef && bRef) {
            if (!b.getDescriptor().equals("Ljava/lang/Object;")) {
                code.add(new TypeInsnNode(Opcodes.CHECKCAST, b.getInternalName()));
            }
        } else if (aRef && b.getSort() != Type.VOID) {
            String box = box(b);
            code.add(new TypeInsnNode(Opcodes.CHECKCAST, box));
            code.add(new MethodInsnNode(Opcodes.INVOKEVIRTUAL, box, b.getClassName() + "Value", "()" + b.getDescriptor(), false));
        } else if (bRef && a.getSort() != Type.VOID) {
            String box = box(a);
            code.add(new MethodInsnNode(Opcodes.INVOKESTATIC, box, "valueOf", "(" + a.getDescriptor() + ")L" + box + ";", false));
        } else {
            throw new Downgrade.Refusal(at + " has a lambda that needs a conversion from " + a + " to " + b
                    + ", which the downgrader does not write");
        }
    }

    static String box(Type t) { // Type's sorts: VOID, BOOLEAN, CHAR, BYTE, SHORT, INT, FLOAT, LONG, DOUBLE
        return "java/lang/" + new String[] {"Void", "Boolean", "Character", "Byte", "Short", "Integer", "Float",
            "Long", "Double"}[t.getSort()];
    }
}
